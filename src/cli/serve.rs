//! `offload serve`: the engine as a long-lived process for a client in any language
//! (PROTOCOL.md section 19). Requests come on stdin and events go out on stdout, both as
//! CBOR sequences, payloads as they are.
//!
//! This file ties serve's life to its client's and starts the parts: `serve/reader.rs` reads
//! stdin on a thread and makes requests of its frames (`serve/requests.rs`),
//! `serve/session.rs` is the loop on the main context that drives the queue, and
//! `serve/writer.rs` writes the events (`serve/events.rs`) on another thread. The main
//! context never blocks on the client and never decodes CBOR.

mod events;
mod reader;
mod requests;
mod session;
mod writer;

use std::process::ExitCode;

use anyhow::{bail, Context as _};

use self::requests::Defaults;
use self::session::{Msg, Session};
use super::ServeArgs;

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    die_with_parent()?;
    let queue = super::queue(args.jobs);
    let (tx, rx) = async_channel::unbounded::<Msg>();
    let writer = {
        let tx = tx.clone();
        writer::Writer::start(move || {
            let _ = tx.send_blocking(Msg::ClientGone);
        })
        .context("cannot start the writer of events")?
    };
    {
        let tx = tx.clone();
        let defaults = Defaults { nice: args.nice };
        reader::start(defaults, move |heard| {
            tx.send_blocking(Msg::Heard(heard)).is_ok()
        })
        .context("cannot start the reader of requests")?;
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let tx = tx.clone();
        glib_unix::unix_signal_add_local(signal, move || {
            let _ = tx.try_send(Msg::Stop);
            glib::ControlFlow::Continue
        });
    }
    let session = Session::new(queue, writer, tx);
    let status = glib::MainContext::default().block_on(session.run(rx));
    Ok(ExitCode::from(status))
}

/// Makes the kernel kill this process when its parent (the client) dies, so that a client
/// killed with SIGKILL leaves nothing behind (the processors die with serve: their guards'
/// and workers' own parent-death signals). If the parent died before the request took
/// effect, serve has been adopted: it ends now.
fn die_with_parent() -> anyhow::Result<()> {
    // SAFETY: getppid and prctl(PR_SET_PDEATHSIG) touch no memory of ours.
    let parent = unsafe { libc::getppid() };
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if set != 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot ask to die with the parent process (prctl PR_SET_PDEATHSIG)");
    }
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        bail!("the parent process ended as serve started");
    }
    Ok(())
}
