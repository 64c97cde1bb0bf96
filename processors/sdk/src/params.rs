//! What a processor declares in `--describe` so that a host can run it on files and build a
//! form for it (PROTOCOL.md section 10.1): how a file becomes its input and its result a file,
//! and its parameters, each checked the same way by the SDK (on the input) and by a host (on
//! what a person typed).
//!
//! A parameter is a top-level field of the input map, named as declared; a file's bytes go to
//! the declared input field.

use ciborium::Value;
use serde::{Deserialize, Serialize};

/// How a file becomes a processor's input, and its result a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Files {
    /// The input field that receives the file's bytes (a byte string).
    pub input_field: String,
    /// The file name extensions accepted, lower case, without the dot (`["jpg", "png"]`).
    pub accepts: Vec<String>,
    /// The result field that holds the output file's bytes.
    pub output_field: String,
    /// The output file's extension, without the dot.
    pub output_extension: String,
    /// A parameter (a choice) whose value is the output's extension instead, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_extension_parameter: Option<String>,
}

impl Files {
    /// Whether a file of this name is accepted (by its extension, case-insensitively).
    pub fn accepts_name(&self, name: &str) -> bool {
        let Some((_, extension)) = name.rsplit_once('.') else {
            return false;
        };
        let extension = extension.to_ascii_lowercase();
        self.accepts.contains(&extension)
    }
}

/// One parameter: its name (the input field), type, default, bounds and a one-line label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// The input field it sets.
    pub name: String,
    /// One line for a form.
    pub label: String,
    /// Its type, default and bounds.
    #[serde(flatten)]
    pub kind: ParameterKind,
}

/// A parameter's type, with its default and bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParameterKind {
    /// A whole number, optionally within `minimum..=maximum`.
    Integer {
        default: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minimum: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maximum: Option<i64>,
    },
    /// A number, optionally within `minimum..=maximum`.
    Number {
        default: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minimum: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maximum: Option<f64>,
    },
    /// True or false.
    Boolean { default: bool },
    /// Any text.
    String { default: String },
    /// One of `choices`.
    Choice {
        default: String,
        choices: Vec<String>,
    },
}

impl Parameter {
    /// An integer parameter.
    pub fn integer(name: &str, default: i64, label: &str) -> Self {
        Self::new(
            name,
            label,
            ParameterKind::Integer {
                default,
                minimum: None,
                maximum: None,
            },
        )
    }

    /// A number parameter.
    pub fn number(name: &str, default: f64, label: &str) -> Self {
        Self::new(
            name,
            label,
            ParameterKind::Number {
                default,
                minimum: None,
                maximum: None,
            },
        )
    }

    /// A boolean parameter.
    pub fn boolean(name: &str, default: bool, label: &str) -> Self {
        Self::new(name, label, ParameterKind::Boolean { default })
    }

    /// A text parameter.
    pub fn string(name: &str, default: &str, label: &str) -> Self {
        Self::new(
            name,
            label,
            ParameterKind::String {
                default: default.to_owned(),
            },
        )
    }

    /// A choice among `choices`.
    pub fn choice(name: &str, choices: &[&str], default: &str, label: &str) -> Self {
        Self::new(
            name,
            label,
            ParameterKind::Choice {
                default: default.to_owned(),
                choices: choices.iter().map(|c| (*c).to_owned()).collect(),
            },
        )
    }

    fn new(name: &str, label: &str, kind: ParameterKind) -> Self {
        Self {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
        }
    }

    /// Bounds an integer or number parameter (others are unchanged).
    pub fn range(mut self, low: f64, high: f64) -> Self {
        match &mut self.kind {
            ParameterKind::Integer {
                minimum, maximum, ..
            } => {
                *minimum = Some(low as i64);
                *maximum = Some(high as i64);
            }
            ParameterKind::Number {
                minimum, maximum, ..
            } => {
                *minimum = Some(low);
                *maximum = Some(high);
            }
            _ => {}
        }
        self
    }

    /// What values it takes, for messages: "an integer from 16 to 4096", "one of png, jpeg".
    pub fn allowed(&self) -> String {
        let bounds = |low: Option<String>, high: Option<String>| match (low, high) {
            (Some(l), Some(h)) => format!(" from {l} to {h}"),
            (Some(l), None) => format!(" of at least {l}"),
            (None, Some(h)) => format!(" of at most {h}"),
            (None, None) => String::new(),
        };
        match &self.kind {
            ParameterKind::Integer {
                minimum, maximum, ..
            } => format!(
                "an integer{}",
                bounds(
                    minimum.map(|v| v.to_string()),
                    maximum.map(|v| v.to_string())
                )
            ),
            ParameterKind::Number {
                minimum, maximum, ..
            } => format!(
                "a number{}",
                bounds(
                    minimum.map(|v| v.to_string()),
                    maximum.map(|v| v.to_string())
                )
            ),
            ParameterKind::Boolean { .. } => "true or false".to_owned(),
            ParameterKind::String { .. } => "a text".to_owned(),
            ParameterKind::Choice { choices, .. } => format!("one of {}", choices.join(", ")),
        }
    }

    /// Checks a value of this parameter as it arrives in an input; the error names the
    /// parameter and what it takes.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let ok = match (&self.kind, value) {
            (
                ParameterKind::Integer {
                    minimum, maximum, ..
                },
                Value::Integer(i),
            ) => i64::try_from(*i)
                .is_ok_and(|v| minimum.is_none_or(|m| v >= m) && maximum.is_none_or(|m| v <= m)),
            (
                ParameterKind::Number {
                    minimum, maximum, ..
                },
                Value::Float(_) | Value::Integer(_),
            ) => {
                let v = match value {
                    Value::Float(f) => *f,
                    Value::Integer(i) => i128::from(*i) as f64,
                    _ => f64::NAN,
                };
                v.is_finite() && minimum.is_none_or(|m| v >= m) && maximum.is_none_or(|m| v <= m)
            }
            (ParameterKind::Boolean { .. }, Value::Bool(_)) => true,
            (ParameterKind::String { .. }, Value::Text(_)) => true,
            (ParameterKind::Choice { choices, .. }, Value::Text(t)) => choices.contains(t),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "parameter {}: expected {}, got {}",
                self.name,
                self.allowed(),
                crate::json::cbor_to_json(value)
            ))
        }
    }

    /// The value a person typed (`--param size=128`), as this parameter's type, checked.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        let bad = || {
            format!(
                "parameter {}: expected {}, got {text:?}",
                self.name,
                self.allowed()
            )
        };
        let value = match &self.kind {
            ParameterKind::Integer { .. } => {
                Value::Integer(text.trim().parse::<i64>().map_err(|_| bad())?.into())
            }
            ParameterKind::Number { .. } => {
                Value::Float(text.trim().parse::<f64>().map_err(|_| bad())?)
            }
            ParameterKind::Boolean { .. } => match text.trim() {
                "true" | "yes" | "1" | "on" => Value::Bool(true),
                "false" | "no" | "0" | "off" => Value::Bool(false),
                _ => return Err(bad()),
            },
            ParameterKind::String { .. } | ParameterKind::Choice { .. } => {
                Value::Text(text.to_owned())
            }
        };
        self.check(&value)?;
        Ok(value)
    }

    /// Its default, as an input value.
    pub fn default_value(&self) -> Value {
        match &self.kind {
            ParameterKind::Integer { default, .. } => Value::Integer((*default).into()),
            ParameterKind::Number { default, .. } => Value::Float(*default),
            ParameterKind::Boolean { default } => Value::Bool(*default),
            ParameterKind::String { default } | ParameterKind::Choice { default, .. } => {
                Value::Text(default.clone())
            }
        }
    }
}

/// Checks the declared parameters present in `input` (a map); absent ones take their
/// default in the processor. The first wrong one is named.
pub fn check_input(parameters: &[Parameter], input: &Value) -> Result<(), String> {
    let Some(map) = input.as_map() else {
        return Ok(());
    };
    for parameter in parameters {
        let given = map
            .iter()
            .find(|(k, _)| k.as_text() == Some(parameter.name.as_str()));
        if let Some((_, value)) = given {
            parameter.check(value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size() -> Parameter {
        Parameter::integer("size", 256, "Fit into a box of this many pixels").range(16.0, 4096.0)
    }

    #[test]
    fn values_are_checked_and_the_error_names_the_parameter_and_the_range() {
        assert!(size().check(&Value::Integer(128.into())).is_ok());
        let err = size().check(&Value::Integer(5000.into())).unwrap_err();
        assert_eq!(
            err,
            "parameter size: expected an integer from 16 to 4096, got 5000"
        );
        let format = Parameter::choice("format", &["png", "jpeg"], "png", "Output format");
        assert!(format.check(&Value::Text("jpeg".into())).is_ok());
        let err = format.parse("gif").unwrap_err();
        assert_eq!(
            err,
            "parameter format: expected one of png, jpeg, got \"gif\""
        );
        assert_eq!(size().parse(" 64 "), Ok(Value::Integer(64.into())));
        assert!(size().parse("big").is_err());
    }

    #[test]
    fn a_description_round_trips_through_json() {
        let parameters = vec![
            size(),
            Parameter::number("sigma", 1.5, "Blur radius").range(0.0, 50.0),
            Parameter::boolean("strip", true, "Drop metadata"),
        ];
        let json = serde_json::to_string(&parameters).expect("json");
        assert!(json.contains("\"type\":\"integer\""), "{json}");
        let back: Vec<Parameter> = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, parameters);
        let files = Files {
            input_field: "image".into(),
            accepts: vec!["jpg".into(), "jpeg".into(), "png".into()],
            output_field: "image".into(),
            output_extension: "png".into(),
            output_extension_parameter: Some("format".into()),
        };
        assert!(files.accepts_name("IMG_0001.JPG"));
        assert!(!files.accepts_name("notes.txt"));
        assert!(!files.accepts_name("README"));
    }
}
