//! `offload serve`'s stdin, read on a thread of its own: split into request frames by
//! walking item heads (the SDK's `SequenceBuffer`), each made into a request there
//! (`requests.rs`), so that the main context neither waits for the client nor decodes CBOR.

use std::io;

use offload::sdk::decode::{DecodeLimits, DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH};
use offload::sdk::sequence::SequenceBuffer;

use super::requests::{self, Defaults, Read};

/// The most a request frame may hold beyond its input (1 GiB at most, as any job's).
pub const FRAME_OVERHEAD: usize = 1024 * 1024;

/// What the reader tells the session.
#[derive(Debug)]
pub enum Heard {
    /// A request frame, read.
    Frame(Read),
    /// The end of stdin between frames: the client is done.
    End,
    /// The stream is broken (not CBOR, over the limits, or cut inside a frame): why.
    Broken(String),
}

/// Starts the reader; it sends what it hears with `send` (which says false once nobody
/// listens) and ends after `End` or `Broken`.
pub fn start(defaults: Defaults, send: impl Fn(Heard) -> bool + Send + 'static) -> io::Result<()> {
    let reader = move || {
        let mut stdin = io::stdin().lock();
        let last = read_requests(&mut stdin, defaults, &send);
        send(last);
    };
    // The thread may stay blocked on a client that never writes; the process does not wait
    // for it.
    std::thread::Builder::new()
        .name("offload-serve-in".into())
        .spawn(reader)
        .map(drop)
}

/// Reads frames until the stream ends or breaks; gives how it ended.
fn read_requests(
    stdin: &mut impl io::Read,
    defaults: Defaults,
    send: &impl Fn(Heard) -> bool,
) -> Heard {
    let limits = DecodeLimits {
        max_bytes: DEFAULT_MAX_BYTES + FRAME_OVERHEAD,
        // The input, one level down.
        max_depth: DEFAULT_MAX_DEPTH + 1,
    };
    let mut frames = SequenceBuffer::new(limits);
    loop {
        loop {
            let range = match frames.next_range() {
                Ok(Some(range)) => range,
                Ok(None) => break,
                Err(err) => return Heard::Broken(format!("a request that is not CBOR: {err}")),
            };
            let read = requests::read(frames.get(range), defaults);
            if !send(Heard::Frame(read)) {
                return Heard::End;
            }
        }
        // Larger reads while a large frame arrives.
        let chunk = frames.pending().clamp(64 * 1024, 4 << 20);
        match frames.read_from(stdin, chunk) {
            Ok(0) if frames.is_empty() => return Heard::End,
            Ok(0) => {
                return Heard::Broken(format!(
                    "stdin ended inside a request ({} bytes of it came)",
                    frames.pending()
                ))
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Heard::Broken(format!("cannot read stdin: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn heard(stream: &[u8]) -> (Vec<Heard>, Heard) {
        let got = Mutex::new(Vec::new());
        let send = |heard: Heard| {
            got.lock().expect("not poisoned").push(heard);
            true
        };
        // Read a few bytes at a time, as a pipe may give them.
        struct Trickle<'a>(&'a [u8]);
        impl io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let last = read_requests(&mut Trickle(stream), Defaults { nice: 10 }, &send);
        (got.into_inner().expect("not poisoned"), last)
    }

    #[test]
    fn frames_are_split_as_they_arrive_and_the_end_between_frames_is_the_end() {
        // {"type": "cancel_all"} twice.
        let frame = [
            0xa1, 0x64, b't', b'y', b'p', b'e', 0x6a, b'c', b'a', b'n', b'c', b'e', b'l', b'_',
            b'a', b'l', b'l',
        ];
        let (got, last) = heard(&[frame, frame].concat());
        assert_eq!(got.len(), 2);
        assert!(matches!(last, Heard::End));
        let (got, last) = heard(&[&frame[..], &frame[..5]].concat());
        assert_eq!(got.len(), 1);
        assert!(matches!(last, Heard::Broken(why) if why.contains("inside a request")));
    }

    #[test]
    fn bytes_that_are_not_cbor_break_the_stream() {
        let (got, last) = heard(&[0x01, 0xff, 0x01]);
        // The integer is a request not understood; the break byte ends it all.
        assert_eq!(got.len(), 1);
        assert!(matches!(last, Heard::Broken(why) if why.contains("not CBOR")));
    }
}
