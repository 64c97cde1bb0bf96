//! A form generated from a processor's parameters (PROTOCOL.md 10.1), as 3D Slicer generates
//! a command-line module's panel from its description: a row per parameter, with the widget its
//! type calls for (libadwaita 1.2: a spin button for numbers, a switch for a boolean, a combo
//! row for a choice, an entry row for text), starting from the values last used.

use std::collections::HashMap;
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;

use crate::sdk::{Parameter, ParameterKind};

/// One parameter's row: its editing widget, and how to read the value as text.
struct Field {
    name: String,
    widget: gtk::Widget,
    read: Box<dyn Fn() -> String>,
}

/// The form of one processor.
pub struct ParamForm {
    group: adw::PreferencesGroup,
    fields: Vec<Field>,
}

impl ParamForm {
    /// A form for `parameters`, filled with `last` values where they are given (by name),
    /// else the defaults.
    pub fn new(parameters: &[Parameter], last: &HashMap<String, String>) -> Self {
        let group = adw::PreferencesGroup::builder().title("Parameters").build();
        let fields = parameters
            .iter()
            .map(|p| {
                let field = field(p, last.get(&p.name).map(String::as_str));
                group.add(&field.0);
                field.1
            })
            .collect();
        Self { group, fields }
    }

    /// The widget to put in a window.
    pub fn widget(&self) -> &adw::PreferencesGroup {
        &self.group
    }

    /// Every value as `KEY=VALUE`, as `offload run --param` takes them.
    pub fn params(&self) -> Vec<String> {
        self.fields
            .iter()
            .map(|f| format!("{}={}", f.name, (f.read)()))
            .collect()
    }

    /// Every value by name, to remember.
    pub fn values(&self) -> HashMap<String, String> {
        self.fields
            .iter()
            .map(|f| (f.name.clone(), (f.read)()))
            .collect()
    }

    /// The editing widget of a parameter (a `gtk::SpinButton`, `gtk::Switch`,
    /// `adw::ComboRow` or `adw::EntryRow`).
    pub fn editor(&self, name: &str) -> Option<gtk::Widget> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.widget.clone())
    }
}

/// A row and its field for `parameter`, starting at `last` when it parses.
fn field(parameter: &Parameter, last: Option<&str>) -> (gtk::Widget, Field) {
    let name = parameter.name.clone();
    let usable = |text: &str| parameter.parse(text).is_ok();
    let start = last.filter(|t| usable(t));
    match &parameter.kind {
        ParameterKind::Integer {
            default,
            minimum,
            maximum,
        } => {
            let low = minimum.map_or(-1e9, |m| m as f64);
            let high = maximum.map_or(1e9, |m| m as f64);
            let spin = gtk::SpinButton::with_range(low, high, 1.0);
            spin.set_value(
                start
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(*default as f64),
            );
            spin.set_valign(gtk::Align::Center);
            let row = action_row(parameter, &spin);
            let read = {
                let spin = spin.clone();
                Box::new(move || spin.value_as_int().to_string()) as Box<dyn Fn() -> String>
            };
            (
                row,
                Field {
                    name,
                    widget: spin.upcast(),
                    read,
                },
            )
        }
        ParameterKind::Number {
            default,
            minimum,
            maximum,
        } => {
            let spin =
                gtk::SpinButton::with_range(minimum.unwrap_or(-1e9), maximum.unwrap_or(1e9), 0.1);
            spin.set_digits(2);
            spin.set_value(start.and_then(|t| t.parse().ok()).unwrap_or(*default));
            spin.set_valign(gtk::Align::Center);
            let row = action_row(parameter, &spin);
            let read = {
                let spin = spin.clone();
                Box::new(move || spin.value().to_string()) as Box<dyn Fn() -> String>
            };
            (
                row,
                Field {
                    name,
                    widget: spin.upcast(),
                    read,
                },
            )
        }
        ParameterKind::Boolean { default } => {
            let switch = gtk::Switch::builder()
                .active(start.map_or(*default, |t| t == "true"))
                .valign(gtk::Align::Center)
                .build();
            let row = action_row(parameter, &switch);
            let read = {
                let switch = switch.clone();
                Box::new(move || switch.is_active().to_string()) as Box<dyn Fn() -> String>
            };
            (
                row,
                Field {
                    name,
                    widget: switch.upcast(),
                    read,
                },
            )
        }
        ParameterKind::String { default } => {
            let row = adw::EntryRow::builder().title(&parameter.label).build();
            row.set_text(start.unwrap_or(default));
            let read = {
                let row = row.clone();
                Box::new(move || row.text().to_string()) as Box<dyn Fn() -> String>
            };
            (
                row.clone().upcast(),
                Field {
                    name,
                    widget: row.upcast(),
                    read,
                },
            )
        }
        ParameterKind::Choice { default, choices } => {
            let names: Vec<&str> = choices.iter().map(String::as_str).collect();
            let model = gtk::StringList::new(&names);
            let row = adw::ComboRow::builder()
                .title(&parameter.label)
                .model(&model)
                .build();
            let wanted = start.unwrap_or(default);
            let index = choices.iter().position(|c| c == wanted).unwrap_or(0);
            row.set_selected(index as u32);
            let read = {
                let (row, choices) = (row.clone(), Rc::new(choices.clone()));
                Box::new(move || {
                    choices
                        .get(row.selected() as usize)
                        .cloned()
                        .unwrap_or_default()
                }) as Box<dyn Fn() -> String>
            };
            (
                row.clone().upcast(),
                Field {
                    name,
                    widget: row.upcast(),
                    read,
                },
            )
        }
    }
}

fn action_row(parameter: &Parameter, suffix: &impl IsA<gtk::Widget>) -> gtk::Widget {
    // The processor's name for it goes in the tooltip: a person reads the label.
    let row = adw::ActionRow::builder()
        .title(glib::markup_escape_text(&parameter.label).as_str())
        .tooltip_text(&parameter.name)
        .build();
    row.add_suffix(suffix);
    row.set_activatable_widget(Some(suffix));
    row.upcast()
}
