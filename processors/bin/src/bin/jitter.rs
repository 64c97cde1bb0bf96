//! `offload-jitter`: moves each vertex of a triangle mesh by a small random offset.
//!
//! This is the work of 3D Slicer's parallel-processing demo: every coordinate of every vertex
//! gets its own offset, drawn uniformly from `[-amplitude, amplitude]`. The offsets come from a
//! PRNG seeded with `seed` and are drawn in order (vertex 0's x, y, z, then vertex 1's, ...), so
//! the same input always gives the same result. The faces are returned unchanged.

use std::fmt;
use std::marker::PhantomData;
use std::process::ExitCode;

use offload_sdk::number::Real;
use offload_sdk::{Context, Error, Processor};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Vertices jittered between two cancellation checks and progress reports.
const CHUNK: usize = 1 << 16;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct JitterInput {
    /// `[x, y, z]` for each vertex.
    #[serde(deserialize_with = "points")]
    vertices: Vec<[f64; 3]>,
    /// Three vertex indices (from 0) for each triangle.
    #[serde(deserialize_with = "triangles")]
    faces: Vec<[u32; 3]>,
    /// The largest offset along each axis; finite and at least 0.
    #[serde(deserialize_with = "offload_sdk::number::real")]
    amplitude: f64,
    /// Seeds the PRNG: the same seed gives the same offsets.
    seed: u64,
}

#[derive(Debug, Serialize)]
struct JitterOutput {
    vertices: Vec<[f64; 3]>,
    faces: Vec<[u32; 3]>,
}

fn points<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<[f64; 3]>, D::Error> {
    let points = deserializer.deserialize_seq(TriplesVisitor::<Real>::new("vertex"))?;
    Ok(points
        .into_iter()
        .map(|[Real(x), Real(y), Real(z)]| [x, y, z])
        .collect())
}

fn triangles<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<[u32; 3]>, D::Error> {
    deserializer.deserialize_seq(TriplesVisitor::<u32>::new("face"))
}

/// An array that should hold exactly three items. A plain `[T; 3]` would quietly drop a fourth
/// item of a JSON array (and lose its place in a CBOR one), turning a quad into a triangle.
enum Triple<T> {
    Three([T; 3]),
    /// The array had this many items instead.
    WrongLength(usize),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Triple<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TripleVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for TripleVisitor<T> {
            type Value = Triple<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of 3 items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Triple<T>, A::Error> {
                let Some(a) = seq.next_element()? else {
                    return Ok(Triple::WrongLength(0));
                };
                let Some(b) = seq.next_element()? else {
                    return Ok(Triple::WrongLength(1));
                };
                let Some(c) = seq.next_element()? else {
                    return Ok(Triple::WrongLength(2));
                };
                let mut len = 3;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    len += 1;
                }
                Ok(if len == 3 {
                    Triple::Three([a, b, c])
                } else {
                    Triple::WrongLength(len)
                })
            }
        }
        deserializer.deserialize_seq(TripleVisitor(PhantomData))
    }
}

/// A list of [`Triple`]s; a wrong length is reported with the item's index.
struct TriplesVisitor<T> {
    what: &'static str,
    item: PhantomData<T>,
}

impl<T> TriplesVisitor<T> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            item: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for TriplesVisitor<T> {
    type Value = Vec<[T; 3]>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} arrays of 3 items", self.what)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The length comes from the input: trust it only so far.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(item) = seq.next_element::<Triple<T>>()? {
            match item {
                Triple::Three(item) => items.push(item),
                Triple::WrongLength(len) => {
                    return Err(de::Error::custom(format_args!(
                        "{} {} has {len} items, expected 3",
                        self.what,
                        items.len()
                    )))
                }
            }
        }
        Ok(items)
    }
}

fn validate(input: &JitterInput) -> Result<(), Error> {
    if !input.amplitude.is_finite() || input.amplitude < 0.0 {
        return Err(Error::invalid_input(format!(
            "amplitude must be a finite number at least 0, got {}",
            input.amplitude
        )));
    }
    if let Some(index) = input
        .vertices
        .iter()
        .position(|v| v.iter().any(|c| !c.is_finite()))
    {
        return Err(Error::invalid_input(format!(
            "vertex {index} has a coordinate that is not a finite number"
        )));
    }
    let count = input.vertices.len();
    for (index, face) in input.faces.iter().enumerate() {
        if let Some(&bad) = face.iter().find(|&&v| v as usize >= count) {
            return Err(Error::invalid_input(format!(
                "face {index} refers to vertex {bad}, but there are only {count} vertices \
                 (indices start at 0)"
            )));
        }
    }
    Ok(())
}

fn jitter(input: JitterInput, ctx: &mut Context) -> Result<JitterOutput, Error> {
    validate(&input)?;
    let JitterInput {
        mut vertices,
        faces,
        amplitude,
        seed,
    } = input;
    let mut rng = fastrand::Rng::with_seed(seed);
    let total = vertices.len().max(1) as f64;
    let mut done = 0usize;
    for chunk in vertices.chunks_mut(CHUNK) {
        ctx.check_cancelled()?;
        for coordinate in chunk.iter_mut().flatten() {
            *coordinate += (rng.f64() * 2.0 - 1.0) * amplitude;
        }
        done += chunk.len();
        ctx.progress(done as f64 / total);
    }
    if vertices.is_empty() {
        ctx.progress(1.0);
    }
    Ok(JitterOutput { vertices, faces })
}

fn main() -> ExitCode {
    Processor::new(
        "jitter",
        "Moves each vertex of a triangle mesh by a random offset (repeatable for a given seed)",
    )
    .version(env!("CARGO_PKG_VERSION"))
    .example(&example())
    .example_output_with(|| jitter(example(), &mut Context::detached()).ok())
    .run(jitter)
}

/// The example input: a regular tetrahedron.
fn example() -> JitterInput {
    JitterInput {
        // A regular tetrahedron.
        vertices: vec![
            [1.0, 1.0, 1.0],
            [1.0, -1.0, -1.0],
            [-1.0, 1.0, -1.0],
            [-1.0, -1.0, 1.0],
        ],
        faces: vec![[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]],
        amplitude: 0.05,
        seed: 42,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(amplitude: f64, seed: u64) -> JitterInput {
        JitterInput {
            vertices: vec![
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0],
            ],
            faces: vec![[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]],
            amplitude,
            seed,
        }
    }

    fn run(input: JitterInput) -> Result<JitterOutput, Error> {
        jitter(input, &mut Context::detached())
    }

    #[test]
    fn offsets_are_bounded_and_repeatable() {
        let before = mesh(0.1, 1).vertices;
        let a = run(mesh(0.1, 1)).expect("jitters");
        let b = run(mesh(0.1, 1)).expect("jitters");
        let c = run(mesh(0.1, 2)).expect("jitters");
        assert_eq!(a.vertices, b.vertices);
        assert_ne!(a.vertices, c.vertices);
        assert_ne!(a.vertices, before);
        assert_eq!(a.faces, mesh(0.1, 1).faces);
        for (moved, original) in a.vertices.iter().flatten().zip(before.iter().flatten()) {
            assert!((moved - original).abs() <= 0.1);
        }
        assert_eq!(run(mesh(0.0, 1)).expect("jitters").vertices, before);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let mut bad_face = mesh(0.1, 1);
        bad_face.faces.push([0, 1, 4]);
        let err = run(bad_face).expect_err("index out of range");
        assert!(err.message().contains("face 4"), "{err}");
        assert!(run(mesh(-0.1, 1)).is_err());
        assert!(run(mesh(f64::NAN, 1)).is_err());
        assert!(run(mesh(f64::INFINITY, 1)).is_err());
        let mut bad_vertex = mesh(0.1, 1);
        bad_vertex.vertices[2][1] = f64::NAN;
        assert!(run(bad_vertex).is_err());
    }

    fn decode(vertices: ciborium::Value, faces: ciborium::Value) -> Result<JitterInput, String> {
        use ciborium::Value;
        let map = Value::Map(vec![
            (Value::Text("vertices".into()), vertices),
            (Value::Text("faces".into()), faces),
            (Value::Text("amplitude".into()), Value::Integer(1.into())),
            (Value::Text("seed".into()), Value::Integer(9.into())),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&map, &mut bytes).map_err(|err| err.to_string())?;
        // Both ways the SDK decodes: from CBOR bytes, and from a value (the JSON form).
        let from_value = map
            .deserialized::<JitterInput>()
            .map_err(|err| err.to_string());
        let from_bytes = ciborium::from_reader::<JitterInput, _>(bytes.as_slice())
            .map_err(|err| err.to_string());
        assert_eq!(
            from_value.is_ok(),
            from_bytes.is_ok(),
            "{from_value:?} {from_bytes:?}"
        );
        from_bytes
    }

    fn array(items: &[ciborium::Value]) -> ciborium::Value {
        ciborium::Value::Array(items.to_vec())
    }

    #[test]
    fn triples_must_have_three_items_and_numbers_may_be_integers() {
        use ciborium::Value;
        let int = |i: i64| Value::Integer(i.into());
        let vertices = array(&[
            array(&[int(0), Value::Float(0.5), int(-1)]),
            array(&[int(1), int(0), int(0)]),
            array(&[int(0), int(1), int(0)]),
        ]);
        let input =
            decode(vertices.clone(), array(&[array(&[int(0), int(1), int(2)])])).expect("decodes");
        assert_eq!(input.vertices[0], [0.0, 0.5, -1.0]);
        assert_eq!(input.amplitude, 1.0);

        let quad = array(&[array(&[int(0), int(1), int(2), int(2)])]);
        let err = decode(vertices.clone(), quad).expect_err("a quad is not a triangle");
        assert!(err.contains("face 0 has 4 items"), "{err}");
        let short = array(&[array(&[int(0), int(1)])]);
        assert!(decode(short, array(&[])).is_err());
        let negative = array(&[array(&[int(0), int(1), int(-2)])]);
        assert!(decode(vertices, negative).is_err());
    }
}
