//! The first, cheap pass over a payload: serde with borrowed strings and
//! `IgnoredAny`, so no `serde_json::Value` tree is built.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use super::{EventKind, Reason};

/// What the first pass learns about a record.
#[derive(Debug)]
pub struct Peek<'a> {
    /// The model the record belongs to.
    pub model: Cow<'a, str>,
    /// Keys of the `features` object.
    pub feature_keys: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    event_id: Option<IgnoredAny>,
    #[serde(default)]
    ts: Option<IgnoredAny>,
    #[serde(default)]
    version: Option<IgnoredAny>,
    #[serde(default)]
    prediction: Option<IgnoredAny>,
    #[serde(default)]
    label: Option<IgnoredAny>,
    #[serde(borrow, default)]
    features: Option<Keys<'a>>,
}

struct Keys<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Keys<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Keys<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of feature name to value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<CowStr<'a>>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(k.0);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows when it can (no escapes) and owns otherwise.
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Parses `payload` far enough to route and pre-validate it.
pub fn peek(payload: &[u8], kind: EventKind) -> Result<Peek<'_>, (Reason, String)> {
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err((Reason::BadJson, "payload is not a JSON object".into()));
    }
    let raw: Raw<'_> = serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.classify() == serde_json::error::Category::Data {
            Reason::WrongType
        } else {
            Reason::BadJson
        };
        (reason, e.to_string())
    })?;
    let missing = |name: &str| {
        (
            Reason::MissingField,
            format!("required field `{name}` is missing or null"),
        )
    };
    if raw.event_id.is_none() {
        return Err(missing("event_id"));
    }
    if raw.ts.is_none() {
        return Err(missing("ts"));
    }
    let Some(model) = raw.model else {
        return Err(missing("model"));
    };
    match kind {
        EventKind::Prediction => {
            if raw.version.is_none() {
                return Err(missing("version"));
            }
            if raw.prediction.is_none() {
                return Err(missing("prediction"));
            }
        }
        EventKind::Outcome => {
            if raw.label.is_none() {
                return Err(missing("label"));
            }
        }
        EventKind::Feature => {}
    }
    Ok(Peek {
        model,
        feature_keys: raw.features.map(|k| k.0).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(
            peek(b"not json", EventKind::Feature).unwrap_err().0,
            Reason::BadJson
        );
        assert_eq!(
            peek(b"[1,2]", EventKind::Feature).unwrap_err().0,
            Reason::BadJson
        );
        assert_eq!(
            peek(br#"{"event_id":"a","ts":1,"model":3}"#, EventKind::Feature)
                .unwrap_err()
                .0,
            Reason::WrongType
        );
        assert_eq!(
            peek(
                br#"{"event_id":"a","ts":null,"model":"m"}"#,
                EventKind::Feature
            )
            .unwrap_err()
            .0,
            Reason::MissingField
        );
        let p = peek(
            br#"{"event_id":"a","ts":1,"model":"m","features":{"k\"1":1,"b":null}}"#,
            EventKind::Feature,
        )
        .unwrap();
        assert_eq!(p.model, "m");
        assert_eq!(p.feature_keys, vec!["k\"1", "b"]);
    }
}
