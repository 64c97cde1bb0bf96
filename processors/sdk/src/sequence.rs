//! Where CBOR items end in a byte stream: the splitting of a CBOR sequence (RFC 8742) into
//! items, without decoding them.
//!
//! Persistent mode (PROTOCOL.md, section 18) sends frames as a CBOR sequence over a pipe, so a
//! reader must find where each frame ends before it can decode it, while its bytes are still
//! arriving. [`ItemScanner`] walks the heads of one item and skips the contents of strings; it
//! resumes where it stopped when more bytes arrive, so a large item costs one pass however
//! many reads it takes. It checks well-formedness, nesting depth, and the declared size against
//! a limit before the bytes have arrived, so a nine-byte head that claims 2^64 bytes is refused
//! at once and nothing is allocated for it.
//!
//! [`SequenceBuffer`] keeps the bytes of a stream and hands out complete items; the host reads
//! it from a non-blocking pipe, the SDK from a blocking stdin.

use std::io::{self, Read};
use std::ops::Range;

use crate::decode::{DecodeError, DecodeLimits};

/// What is still expected inside an open container.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// A definite-length array, map (twice its pair count) or tag (one): this many items.
    Items(u64),
    /// An indefinite-length array or map, until a break.
    Indefinite,
    /// An indefinite-length byte (2) or text (3) string: definite chunks of that major type,
    /// until a break.
    Chunks(u8),
}

/// Finds where one CBOR item ends, over a buffer that grows: see the module documentation.
///
/// ```
/// use offload_sdk::decode::DecodeLimits;
/// use offload_sdk::sequence::{ItemScanner, Scan};
///
/// let item = [0x82, 0x01, 0x43, b'a', b'b', b'c']; // [1, h'616263']
/// let mut scanner = ItemScanner::new(DecodeLimits::default());
/// assert_eq!(scanner.scan(&item[..3]), Ok(Scan::Incomplete));
/// assert_eq!(scanner.scan(&item), Ok(Scan::Complete(6)));
/// ```
#[derive(Debug, Clone)]
pub struct ItemScanner {
    limits: DecodeLimits,
    /// How far the item has been checked: everything before is whole heads and strings.
    pos: usize,
    stack: Vec<Open>,
}

/// How far a buffer holds an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The item is complete and is this many bytes long.
    Complete(usize),
    /// The item goes on past the end of the buffer.
    Incomplete,
}

impl ItemScanner {
    /// A scanner for one item within `limits`.
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            limits,
            pos: 0,
            stack: Vec::new(),
        }
    }

    /// Forgets the item scanned so far, to scan the next one.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
    }

    /// Scans `buf`, which starts at the item's first byte and holds at least the bytes of the
    /// previous call. Errors are final: the bytes are not one well-formed item within the limits.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Scan, DecodeError> {
        loop {
            let Some(&initial) = buf.get(self.pos) else {
                return Ok(Scan::Incomplete);
            };
            let major = initial >> 5;
            let info = initial & 0x1f;
            // A break closes the innermost indefinite container or string.
            if initial == 0xff {
                match self.stack.last() {
                    Some(Open::Indefinite | Open::Chunks(_)) => {
                        self.stack.pop();
                        self.pos += 1;
                        if self.item_done() {
                            return Ok(Scan::Complete(self.pos));
                        }
                        continue;
                    }
                    _ => return Err(self.malformed()),
                }
            }
            if let Some(Open::Chunks(string)) = self.stack.last() {
                // Inside an indefinite string, only definite strings of the same type.
                if major != *string || info == 31 {
                    return Err(self.malformed());
                }
            }
            let extra = match info {
                0..=23 => 0,
                24 => 1,
                25 => 2,
                26 => 4,
                27 => 8,
                31 => 0,
                _ => return Err(self.malformed()),
            };
            let Some(head) = buf.get(self.pos + 1..self.pos + 1 + extra) else {
                return Ok(Scan::Incomplete);
            };
            let argument = if info < 24 {
                u64::from(info)
            } else {
                head.iter().fold(0u64, |n, b| n << 8 | u64::from(*b))
            };
            let head_len = 1 + extra;
            let complete = match (major, info) {
                // Integers, and simple values and floats (whose bytes the head covers).
                (0 | 1 | 7, 0..=27) => {
                    if major == 7 && info == 24 && argument < 32 {
                        return Err(self.malformed());
                    }
                    self.pos += head_len;
                    self.item_done()
                }
                // Definite byte and text strings: the head and then the content.
                (2 | 3, 0..=27) => {
                    let end = usize::try_from(argument)
                        .ok()
                        .and_then(|len| (self.pos + head_len).checked_add(len))
                        .filter(|end| *end <= self.limits.max_bytes)
                        .ok_or(DecodeError::TooLarge {
                            size: usize::try_from(argument)
                                .unwrap_or(usize::MAX)
                                .saturating_add(self.pos + head_len),
                            limit: self.limits.max_bytes,
                        })?;
                    if end > buf.len() {
                        // Wait for the whole string: only whole heads and strings are passed.
                        return Ok(Scan::Incomplete);
                    }
                    self.pos = end;
                    self.item_done()
                }
                (2 | 3, 31) => self.open(Open::Chunks(major), head_len)?,
                (4, 31) | (5, 31) => self.open(Open::Indefinite, head_len)?,
                (4, _) | (5, _) | (6, _) => {
                    let items = match major {
                        4 => argument,
                        5 => argument.checked_mul(2).ok_or_else(|| self.malformed())?,
                        _ => 1,
                    };
                    if items == 0 {
                        self.pos += head_len;
                        self.item_done()
                    } else {
                        self.open(Open::Items(items), head_len)?
                    }
                }
                _ => return Err(self.malformed()),
            };
            if self.pos > self.limits.max_bytes {
                return Err(DecodeError::TooLarge {
                    size: self.pos,
                    limit: self.limits.max_bytes,
                });
            }
            if complete {
                return Ok(Scan::Complete(self.pos));
            }
        }
    }

    /// Opens a container; never completes the item.
    fn open(&mut self, open: Open, head_len: usize) -> Result<bool, DecodeError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(DecodeError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        self.stack.push(open);
        self.pos += head_len;
        Ok(false)
    }

    /// One item ended: counts it against its container, closing those that are full. Returns
    /// whether that completed the outermost item.
    fn item_done(&mut self) -> bool {
        while let Some(Open::Items(left)) = self.stack.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.stack.pop();
        }
        self.stack.is_empty()
    }

    fn malformed(&self) -> DecodeError {
        DecodeError::NotCbor { offset: self.pos }
    }
}

/// The length of the one complete item at the start of `bytes`, or `None` if it is incomplete.
///
/// ```
/// use offload_sdk::decode::DecodeLimits;
/// use offload_sdk::sequence::item_len;
/// assert_eq!(item_len(&[0x01, 0x02], DecodeLimits::default()), Ok(Some(1)));
/// assert_eq!(item_len(&[0x62, b'a'], DecodeLimits::default()), Ok(None));
/// ```
pub fn item_len(bytes: &[u8], limits: DecodeLimits) -> Result<Option<usize>, DecodeError> {
    match ItemScanner::new(limits).scan(bytes)? {
        Scan::Complete(len) => Ok(Some(len)),
        Scan::Incomplete => Ok(None),
    }
}

/// The entries of a CBOR map with text keys, as each key and the byte range of its value,
/// without decoding the values. For frames, whose fields are decoded one by one.
///
/// ```
/// use offload_sdk::sequence::map_entries;
/// // {"id": 7, "x": h'00'}
/// let bytes = [0xa2, 0x62, b'i', b'd', 0x07, 0x61, b'x', 0x41, 0x00];
/// let entries = map_entries(&bytes, 16).unwrap();
/// assert_eq!(entries, vec![("id", 4..5), ("x", 7..9)]);
/// ```
pub fn map_entries(bytes: &[u8], max_depth: usize) -> Result<Vec<(&str, Range<usize>)>, String> {
    let limits = DecodeLimits {
        max_bytes: bytes.len(),
        max_depth,
    };
    let &initial = bytes.first().ok_or("an empty frame")?;
    if initial >> 5 != 5 {
        return Err(format!(
            "a frame must be a CBOR map, not {}",
            major_name(initial >> 5)
        ));
    }
    // Indefinite-length maps are allowed (count `None`); their entries run to a break.
    let (count, mut pos) = match head(bytes) {
        Some((_, count, len)) => (Some(count), len),
        None if initial == 0xbf => (None, 1),
        None => return Err("a malformed map head".into()),
    };
    let mut entries = Vec::new();
    let mut index = 0u64;
    loop {
        match count {
            Some(n) if index == n => break,
            None if bytes.get(pos) == Some(&0xff) => break,
            _ => {}
        }
        let rest = &bytes[pos..];
        let key = match head(rest) {
            Some((3, len, head_len)) => usize::try_from(len)
                .ok()
                .and_then(|len| rest.get(head_len..head_len.checked_add(len)?))
                .map(|key| (key, head_len + key.len())),
            _ => None,
        };
        let Some((key, key_len)) = key else {
            return Err("a frame's keys must be definite-length text strings".into());
        };
        let key = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_owned())?;
        pos += key_len;
        let value_len = item_len(&bytes[pos..], limits)
            .map_err(|e| e.to_string())?
            .ok_or("a truncated value")?;
        entries.push((key, pos..pos + value_len));
        pos += value_len;
        index += 1;
    }
    Ok(entries)
}

/// A definite head: its major type, argument and length in bytes; `None` for indefinite or
/// malformed heads and too few bytes.
fn head(bytes: &[u8]) -> Option<(u8, u64, usize)> {
    let &initial = bytes.first()?;
    let info = initial & 0x1f;
    match info {
        0..=23 => Some((initial >> 5, u64::from(info), 1)),
        24..=27 => {
            let extra = 1usize << (info - 24);
            let argument = bytes
                .get(1..1 + extra)?
                .iter()
                .fold(0u64, |n, b| n << 8 | u64::from(*b));
            Some((initial >> 5, argument, 1 + extra))
        }
        _ => None,
    }
}

fn major_name(major: u8) -> &'static str {
    match major {
        0 | 1 => "an integer",
        2 => "a byte string",
        3 => "a text string",
        4 => "an array",
        6 => "a tagged item",
        _ => "a simple value or float",
    }
}

/// The bytes of a CBOR sequence as they arrive, handed out item by item.
///
/// ```
/// use offload_sdk::decode::DecodeLimits;
/// use offload_sdk::sequence::SequenceBuffer;
///
/// let mut seq = SequenceBuffer::new(DecodeLimits::default());
/// seq.extend(&[0x01, 0x62, b'h']);
/// assert_eq!(seq.next_item().unwrap(), Some(&[0x01][..]));
/// assert_eq!(seq.next_item().unwrap(), None); // "h" of a two-byte text: wait for more
/// seq.extend(b"i");
/// assert_eq!(seq.next_item().unwrap(), Some(&b"\x62hi"[..]));
/// assert!(seq.is_empty());
/// ```
#[derive(Debug)]
pub struct SequenceBuffer {
    /// Bytes received are `buf[start..end]`; `buf[end..]` is room already zeroed, kept so
    /// that reads do not zero a fresh chunk each time.
    buf: Vec<u8>,
    /// Where the next item starts.
    start: usize,
    /// Where the bytes received end.
    end: usize,
    scanner: ItemScanner,
}

impl SequenceBuffer {
    /// An empty buffer whose items are checked against `limits`.
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanner: ItemScanner::new(limits),
        }
    }

    /// Changes the limits for the items after the one being scanned (between items, the next
    /// item).
    pub fn set_limits(&mut self, limits: DecodeLimits) {
        self.scanner.limits = limits;
    }

    /// Appends bytes that arrived.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Reads once from `reader` (up to `chunk` bytes) into the buffer. `Ok(0)` is end of file.
    pub fn read_from(&mut self, reader: &mut impl Read, chunk: usize) -> io::Result<usize> {
        self.compact();
        self.make_room(chunk);
        let n = reader.read(&mut self.buf[self.end..self.end + chunk])?;
        self.end += n;
        Ok(n)
    }

    /// The next complete item, if the buffer holds one; it is consumed.
    pub fn next_item(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        Ok(self.next_range()?.map(|range| &self.buf[range]))
    }

    /// Where the next complete item lies, if the buffer holds one; it is consumed, and its
    /// bytes stay at [`SequenceBuffer::get`] until more bytes are added.
    pub fn next_range(&mut self) -> Result<Option<Range<usize>>, DecodeError> {
        match self.scanner.scan(&self.buf[self.start..self.end])? {
            Scan::Complete(len) => {
                let item = self.start..self.start + len;
                self.start += len;
                self.scanner.reset();
                Ok(Some(item))
            }
            Scan::Incomplete => Ok(None),
        }
    }

    /// The bytes of an item that [`SequenceBuffer::next_range`] handed out.
    pub fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Whether no byte of a further item has arrived.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// How many bytes of an unfinished item are held.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// The bytes held of the next item, for error messages.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes `buf[end..end + more]` exist.
    fn make_room(&mut self, more: usize) {
        let needed = self.end + more;
        if self.buf.len() < needed {
            self.buf.resize(needed, 0);
        }
    }

    /// Moves the unconsumed bytes to the front: consumed bytes are never moved while an item
    /// is being handed out, only before more arrive.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        // Do not keep a large item's room for the small ones that usually follow.
        if self.end < 1 << 16 && self.buf.len() > 1 << 21 {
            self.buf.truncate(1 << 17);
            self.buf.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &ciborium::Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).expect("encodes");
        bytes
    }

    fn len(bytes: &[u8]) -> Result<Option<usize>, DecodeError> {
        item_len(bytes, DecodeLimits::default())
    }

    #[test]
    fn every_prefix_of_an_item_is_incomplete_and_the_whole_is_complete() {
        use ciborium::Value;
        let value = Value::Map(vec![
            (Value::Text("a".into()), Value::Bytes(vec![7; 300])),
            (
                Value::Text("b".into()),
                Value::Array(vec![
                    Value::Float(1.5),
                    Value::Integer((-70000).into()),
                    Value::Tag(1, Box::new(Value::Integer(2.into()))),
                    Value::Null,
                    Value::Bool(true),
                ]),
            ),
        ]);
        let bytes = encode(&value);
        for cut in 0..bytes.len() {
            assert_eq!(len(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        let mut with_more = bytes.clone();
        with_more.extend_from_slice(&[0x01, 0x02]);
        assert_eq!(len(&with_more), Ok(Some(bytes.len())));
    }

    #[test]
    fn resuming_gives_the_same_answer_as_one_pass() {
        let value = ciborium::Value::Array(
            (0..1000)
                .map(|i| ciborium::Value::Text(format!("item {i}")))
                .collect(),
        );
        let bytes = encode(&value);
        let mut scanner = ItemScanner::new(DecodeLimits::default());
        let mut answer = Scan::Incomplete;
        for end in (0..=bytes.len()).step_by(7).chain([bytes.len()]) {
            answer = scanner.scan(&bytes[..end]).expect("well-formed");
        }
        assert_eq!(answer, Scan::Complete(bytes.len()));
    }

    #[test]
    fn indefinite_lengths_end_at_their_break() {
        // [_ 1, (_ h'01', h'02'), {_ "k": 2}]
        let bytes = [
            0x9f, 0x01, 0x5f, 0x41, 0x01, 0x41, 0x02, 0xff, 0xbf, 0x61, b'k', 0x02, 0xff, 0xff,
        ];
        assert_eq!(len(&bytes), Ok(Some(bytes.len())));
        assert_eq!(len(&bytes[..bytes.len() - 1]), Ok(None));
    }

    #[test]
    fn malformed_items_are_refused_with_their_offset() {
        // A reserved additional information value.
        assert_eq!(len(&[0x1c]), Err(DecodeError::NotCbor { offset: 0 }));
        // A break outside an indefinite container.
        assert_eq!(len(&[0x81, 0xff]), Err(DecodeError::NotCbor { offset: 1 }));
        // A text chunk inside an indefinite byte string.
        assert_eq!(
            len(&[0x5f, 0x61, b'a', 0xff]),
            Err(DecodeError::NotCbor { offset: 1 })
        );
        // A two-byte simple value below 32.
        assert_eq!(len(&[0xf8, 0x10]), Err(DecodeError::NotCbor { offset: 0 }));
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_its_bytes_arrive() {
        let limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_depth: 8,
        };
        let head = [0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            item_len(&head, limits),
            Err(DecodeError::TooLarge { limit, .. }) if limit == 1 << 20
        ));
    }

    #[test]
    fn nesting_past_the_limit_is_too_deep() {
        let limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_depth: 3,
        };
        assert_eq!(item_len(&[0x81, 0x81, 0x81, 0x01], limits), Ok(Some(4)));
        assert_eq!(
            item_len(&[0x81, 0x81, 0x81, 0x81, 0x01], limits),
            Err(DecodeError::TooDeep { limit: 3 })
        );
    }

    #[test]
    fn a_sequence_hands_out_items_as_they_complete() {
        let mut seq = SequenceBuffer::new(DecodeLimits::default());
        let one = encode(&ciborium::Value::Text("one".into()));
        let two = encode(&ciborium::Value::Bytes(vec![2; 70_000]));
        let mut stream = one.clone();
        stream.extend_from_slice(&two);
        let mut items = Vec::new();
        for chunk in stream.chunks(4096) {
            seq.extend(chunk);
            while let Some(item) = seq.next_item().expect("well-formed") {
                items.push(item.to_vec());
            }
        }
        assert_eq!(items, vec![one, two]);
        assert!(seq.is_empty());
    }

    #[test]
    fn map_entries_refuse_what_is_not_a_map_with_text_keys() {
        assert!(map_entries(&[0x01], 8).is_err());
        assert!(map_entries(&[0xa1, 0x01, 0x02], 8).is_err());
        assert_eq!(
            map_entries(&[0xbf, 0x61, b'a', 0x01, 0xff], 8),
            Ok(vec![("a", 3..4)])
        );
    }
}
