//! Streaming reader of one JSON log object for [`super::logs`]: walks the object's entries
//! once, keeps the most preferred candidate for each known column (strings borrowed from
//! the input when they have no escapes) and materializes only the other fields, which
//! become `attrs`. Alias preference is the order of [`ALIASES`], whether an alias is a
//! top-level key, a literal dotted key (`"log.level"`) or a nested one
//! (`{"log": {"level": …}}`); a field that loses stays in `attrs`.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// The columns a known field can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Message,
    Ts,
    Level,
    Logger,
    Host,
    Project,
    Env,
    Pool,
    RequestId,
    Tenant,
    Tag,
    Stack,
}

const TARGETS: usize = 12;

/// Aliases of each column, most preferred first.
const ALIASES: [(Target, &[&str]); TARGETS] = [
    (
        Target::Message,
        &["message", "msg", "log", "@message", "text"],
    ),
    (Target::Ts, &["@timestamp", "timestamp", "ts", "time"]),
    (
        Target::Level,
        &["level", "log.level", "severity", "lvl", "loglevel"],
    ),
    (
        Target::Logger,
        &["logger", "log.logger", "logger_name", "loggerName"],
    ),
    (Target::Host, &["host.name", "host", "hostname"]),
    (Target::Project, &["project", "service.name", "app"]),
    (Target::Env, &["env", "environment", "service.environment"]),
    (Target::Pool, &["pool"]),
    (
        Target::RequestId,
        &[
            "request_id",
            "x-request-id",
            "requestId",
            "trace.id",
            "trace_id",
        ],
    ),
    (Target::Tenant, &["tenant", "tenant_id", "tenantId"]),
    (Target::Tag, &["tag", "env_tag", "lane"]),
    (
        Target::Stack,
        &[
            "exception",
            "stack_trace",
            "error.stack_trace",
            "stacktrace",
            "exc_info",
        ],
    ),
];

/// The column and preference of a top-level key.
fn alias_of(key: &str) -> Option<(usize, u8)> {
    ALIASES
        .iter()
        .enumerate()
        .find_map(|(i, (_, keys))| keys.iter().position(|k| *k == key).map(|p| (i, p as u8)))
}

/// A field value as read: strings borrowed from the input where possible.
#[derive(Debug)]
pub(super) enum Scalar<'de> {
    Str(Cow<'de, str>),
    Num(Number),
    Bool(bool),
    /// Null, an array or an object: never a column value (a timestamp of this shape is
    /// refused; any other field of this shape stays in `attrs`).
    Other(Value),
}

impl Scalar<'_> {
    /// The inverse of [`Scalar::into_value`], for values found in nested objects.
    fn from_value(v: Value) -> Self {
        match v {
            Value::String(s) => Scalar::Str(Cow::Owned(s)),
            Value::Number(n) => Scalar::Num(n),
            Value::Bool(b) => Scalar::Bool(b),
            other => Scalar::Other(other),
        }
    }

    pub(super) fn into_value(self) -> Value {
        match self {
            Scalar::Str(s) => Value::String(s.into_owned()),
            Scalar::Num(n) => Value::Number(n),
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Other(v) => v,
        }
    }

    fn is_text(&self) -> bool {
        !matches!(self, Scalar::Other(_))
    }

    fn into_text(self) -> String {
        match self {
            Scalar::Str(s) => s.into_owned(),
            Scalar::Num(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Other(v) => v.to_string(),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(Scalar::Other(Value::Null), Scalar::Num))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other(Value::Null))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Scalar::Other)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(ScalarVisitor)? {
            Scalar::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("an object key must be a string")),
        }
    }
}

/// A candidate for a column: the alias's preference, its key, its value.
type Candidate<'de> = (u8, Cow<'de, str>, Scalar<'de>);

/// One log object, streamed: the best candidate per column, and everything else.
pub(super) struct Fields<'de> {
    best: [Option<Candidate<'de>>; TARGETS],
    pub(super) rest: Map<String, Value>,
}

pub(super) struct FieldsSeed;

impl<'de> DeserializeSeed<'de> for FieldsSeed {
    type Value = Fields<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut f = Fields {
            best: Default::default(),
            rest: Map::new(),
        };
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let Some((target, pref)) = alias_of(&key) else {
                let v: Value = map.next_value()?;
                f.rest.insert(key.into_owned(), v);
                continue;
            };
            let v: Scalar<'de> = map.next_value()?;
            // Only text can fill a column, except that any timestamp field is read (and an
            // unreadable one refused).
            if !v.is_text() && ALIASES[target].0 != Target::Ts {
                f.rest.insert(key.into_owned(), v.into_value());
                continue;
            }
            let slot = &mut f.best[target];
            match slot {
                Some((p, _, _)) if *p < pref => {
                    f.rest.insert(key.into_owned(), v.into_value());
                }
                _ => {
                    // A repeated key replaces its earlier value, as in a JSON map.
                    if let Some((p, k, old)) = slot.replace((pref, key, v)) {
                        if p != pref {
                            f.rest.insert(k.into_owned(), old.into_value());
                        }
                    }
                }
            }
        }
        Ok(f)
    }
}

/// Look a dotted key up in nested objects (`a.b` → `{"a": {"b": …}}`).
fn lookup_nested<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let (head, rest) = key.split_once('.')?;
    let inner = obj.get(head)?.as_object()?;
    inner.get(rest).or_else(|| lookup_nested(inner, rest))
}

/// Remove a nested dotted key, dropping objects it leaves empty.
fn remove_nested(obj: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let (head, rest) = key.split_once('.')?;
    let Some(Value::Object(inner)) = obj.get_mut(head) else {
        return None;
    };
    let v = inner.remove(rest).or_else(|| remove_nested(inner, rest));
    if inner.is_empty() {
        obj.remove(head);
    }
    v
}

impl<'de> Fields<'de> {
    /// Take the value of column `t`: the most preferred alias present, top-level, literal
    /// dotted or nested. Top-level losers are already in `rest`.
    pub(super) fn take(&mut self, target: Target) -> Option<(Cow<'de, str>, Scalar<'de>)> {
        let t = target as usize;
        let keys = ALIASES[t].1;
        let have = self.best[t]
            .as_ref()
            .map_or(keys.len(), |(p, _, _)| *p as usize);
        if !self.rest.is_empty() {
            for key in keys[..have].iter().filter(|k| k.contains('.')) {
                let usable = lookup_nested(&self.rest, key).is_some_and(|v| {
                    target == Target::Ts || !(v.is_object() || v.is_array() || v.is_null())
                });
                let Some(v) = usable.then(|| remove_nested(&mut self.rest, key)).flatten() else {
                    continue;
                };
                if let Some((_, k, old)) = self.best[t].take() {
                    self.rest.insert(k.into_owned(), old.into_value());
                }
                return Some((Cow::Borrowed(*key), Scalar::from_value(v)));
            }
        }
        self.best[t].take().map(|(_, k, v)| (k, v))
    }

    pub(super) fn text(&mut self, t: Target) -> Option<String> {
        self.take(t).map(|(_, v)| v.into_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_listed_in_target_order() {
        for (i, (t, keys)) in ALIASES.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}");
            assert!(
                keys.iter().all(|k| alias_of(k).map(|(j, _)| j) == Some(i)),
                "{t:?}"
            );
        }
    }
}
