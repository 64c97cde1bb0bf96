//! The rows a list model holds, shared by [`JobList`](super::JobList) and
//! [`BatchList`](super::BatchList): the listed rows, the rows told of but not listed yet, and
//! every row by job id. Rows a dispatch of the queue tells of join the list together after it,
//! with one `items-changed` (a queue tells of thousands of jobs in one dispatch).

use std::cell::RefCell;
use std::collections::HashMap;

use gio::prelude::*;

use super::{count, JobObject};
use crate::JobId;

#[derive(Default)]
pub(super) struct Rows {
    pub items: RefCell<Vec<JobObject>>,
    pending: RefCell<Vec<JobObject>>,
    pub by_id: RefCell<HashMap<u64, JobObject>>,
}

impl Rows {
    /// Adds `row`, to be listed by `flush` after this dispatch; `list`'s `flush` is called then.
    pub fn add<L: IsA<glib::Object>>(&self, row: JobObject, list: &L, flush: fn(&L)) {
        self.by_id.borrow_mut().insert(row.id(), row.clone());
        let first = {
            let mut pending = self.pending.borrow_mut();
            pending.push(row);
            pending.len() == 1
        };
        if first {
            let weak = list.downgrade();
            glib::MainContext::ref_thread_default().spawn_local(async move {
                if let Some(list) = weak.upgrade() {
                    flush(&list);
                }
            });
        }
    }

    /// Lists the pending rows; gives where they went and how many, for `items-changed`.
    pub fn flush(&self) -> Option<(u32, u32)> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return None;
        }
        let mut items = self.items.borrow_mut();
        let position = items.len();
        let added = pending.len();
        items.extend(pending);
        Some((count(position), count(added)))
    }

    /// The row of job `id`, listed or pending.
    pub fn get(&self, id: JobId) -> Option<JobObject> {
        self.by_id.borrow().get(&id.0).cloned()
    }

    /// `ListModel::n_items`.
    pub fn n_items(&self) -> u32 {
        count(self.items.borrow().len())
    }

    /// `ListModel::item`.
    pub fn item(&self, position: u32) -> Option<glib::Object> {
        self.items
            .borrow()
            .get(position as usize)
            .map(|item| item.clone().upcast())
    }
}
