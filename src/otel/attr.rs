//! Attribute values kept in a form that is ordered (metric series keys),
//! printable (text output) and convertible to OTLP `KeyValue`s.
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum V {
    S(String),
    I(i64),
    B(bool),
    A(Vec<String>),
}

impl fmt::Display for V {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V::S(s) => {
                if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"') {
                    write!(f, "{s:?}")
                } else {
                    f.write_str(s)
                }
            }
            V::I(i) => write!(f, "{i}"),
            V::B(b) => write!(f, "{b}"),
            V::A(a) => write!(f, "{a:?}"),
        }
    }
}

impl From<&str> for V {
    fn from(s: &str) -> Self {
        V::S(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> Self {
        V::S(s)
    }
}
impl From<i64> for V {
    fn from(i: i64) -> Self {
        V::I(i)
    }
}
impl From<bool> for V {
    fn from(b: bool) -> Self {
        V::B(b)
    }
}

pub type Attrs = Vec<(&'static str, V)>;

pub fn to_any(v: &V) -> AnyValue {
    let value = match v {
        V::S(s) => any_value::Value::StringValue(s.clone()),
        V::I(i) => any_value::Value::IntValue(*i),
        V::B(b) => any_value::Value::BoolValue(*b),
        V::A(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(|s| AnyValue { value: Some(any_value::Value::StringValue(s.clone())) }).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

pub fn to_proto(attrs: &[(&'static str, V)]) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| KeyValue { key: (*k).to_string(), value: Some(to_any(v)), key_strindex: 0 }).collect()
}

pub fn get<'a>(attrs: &'a [(&'static str, V)], key: &str) -> Option<&'a V> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}
