//! Numbers as people write them: serde's `f64` refuses a CBOR or JSON integer, so a field
//! declared `f64` would reject `"x0": -2`. [`Real`] and [`real`] accept both.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// An `f64` that also deserializes from an integer (`1` as well as `1.0`).
///
/// ```
/// use offload_sdk::number::Real;
/// let v: Vec<Real> = serde_json::from_str("[1, 2.5]").unwrap();
/// assert_eq!(v, [Real(1.0), Real(2.5)]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
pub struct Real(pub f64);

impl<'de> Deserialize<'de> for Real {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RealVisitor;
        impl Visitor<'_> for RealVisitor {
            type Value = Real;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Real, E> {
                Ok(Real(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Real, E> {
                Ok(Real(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Real, E> {
                Ok(Real(v as f64))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Real, E> {
                Ok(Real(v as f64))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Real, E> {
                Ok(Real(v as f64))
            }
        }
        deserializer.deserialize_any(RealVisitor)
    }
}

/// For `#[serde(deserialize_with = "offload_sdk::number::real")]` on an `f64` field.
pub fn real<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Real::deserialize(deserializer).map(|Real(v)| v)
}
