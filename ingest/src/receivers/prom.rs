//! Metrics receivers: Prometheus remote_write (snappy-compressed protobuf) and the
//! Prometheus text exposition format, both mapped onto the `metrics` table. `project`,
//! `env`, `pool` and `host` (or `instance`) labels are lifted into columns; all labels stay
//! in `labels` as a JSON object with sorted keys.

use std::collections::BTreeMap;

use prost::Message;

use apus_schema::{MetricRecord, Micros};

/// `prometheus.WriteRequest` (only the fields Apus reads; others are skipped).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

fn record(name: String, labels: BTreeMap<String, String>, value: f64, ts_us: i64) -> MetricRecord {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let host = labels
        .get("host")
        .or_else(|| labels.get("instance"))
        .cloned()
        .unwrap_or_default();
    MetricRecord {
        ts: Micros(ts_us),
        project: get("project"),
        env: get("env"),
        pool: get("pool"),
        host,
        labels: serde_json::to_string(&labels).unwrap_or_default(),
        name,
        value,
    }
}

/// Most bytes of rows one remote_write request may expand to, per decoded byte.
pub const EXPANSION: usize = 8;
/// Size of a metric row besides its labels, for the expansion bound.
const ROW_OVERHEAD: usize = 96;

/// Decode a remote_write body. `max_decoded` bounds the decompressed size, and
/// [`EXPANSION`] × `max_decoded` the rows it expands to (413 above either).
pub fn decode_remote_write(
    body: &[u8],
    max_decoded: usize,
) -> Result<Vec<MetricRecord>, (u16, String)> {
    let n = snap::raw::decompress_len(body).map_err(|e| (400, format!("snappy: {e}")))?;
    if n > max_decoded {
        return Err((
            413,
            format!("decompressed body of {n} bytes exceeds {max_decoded}"),
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| (400, format!("snappy: {e}")))?;
    // Count what decoding will allocate before decoding: an empty series is 2 bytes on the
    // wire but a struct of its own in memory, and every sample becomes a row with its own
    // copy of the series' labels, so a small body could otherwise become gigabytes.
    let budget = max_decoded.saturating_mul(EXPANSION);
    let need = census(&raw, budget).map_err(|e| (400, format!("protobuf: {e}")))?;
    if need > budget {
        return Err((
            413,
            format!(
                "this request decodes to more than {budget} bytes (series, labels and one row \
                 per sample with its labels); send fewer samples (or series) per request"
            ),
        ));
    }
    let req = WriteRequest::decode(raw.as_slice()).map_err(|e| (400, format!("protobuf: {e}")))?;
    let mut out = Vec::new();
    for ts in req.timeseries {
        let mut labels: BTreeMap<String, String> =
            ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
        let name = labels
            .remove("__name__")
            .ok_or((400, "a time series without __name__".to_string()))?;
        for s in ts.samples {
            out.push(record(
                name.clone(),
                labels.clone(),
                s.value,
                s.timestamp.saturating_mul(1000),
            ));
        }
    }
    Ok(out)
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&x, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        v |= u64::from(x & 0x7f) << shift;
        if x < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Walk the fields of one protobuf message without decoding them: `(field, wire type,
/// payload)` for each (the payload of a length-delimited field, else empty).
fn walk(mut b: &[u8], mut f: impl FnMut(u64, u64, &[u8])) -> Result<(), String> {
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        let payload: &[u8] = match wire {
            0 => {
                varint(&mut b)?;
                &[]
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                b = b.get(n..).ok_or("truncated fixed-width field")?;
                &[]
            }
            2 => {
                let n = usize::try_from(varint(&mut b)?).map_err(|_| "length overflow")?;
                let p = b.get(..n).ok_or("truncated length-delimited field")?;
                b = &b[n..];
                p
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        f(field, wire, payload);
    }
    Ok(())
}

/// Bytes a `WriteRequest` will take decoded and expanded to rows, counted on the wire; stops
/// counting once past `budget`.
fn census(raw: &[u8], budget: usize) -> Result<usize, String> {
    let mut need = 0usize;
    let mut err = None;
    walk(raw, |field, wire, series| {
        if field != 1 || wire != 2 || need > budget || err.is_some() {
            return;
        }
        let (mut labels, mut label_bytes, mut samples) = (0usize, 0usize, 0usize);
        let r = walk(series, |f, w, p| match (f, w) {
            (1, 2) => {
                labels += 1;
                label_bytes += p.len();
            }
            (2, 2) => samples += 1,
            _ => {}
        });
        if let Err(e) = r {
            err = Some(e);
            return;
        }
        let decoded = std::mem::size_of::<TimeSeries>()
            + labels * std::mem::size_of::<Label>()
            + label_bytes
            + samples * std::mem::size_of::<Sample>();
        let rows = (ROW_OVERHEAD + 2 * label_bytes + 8 * labels).saturating_mul(samples);
        need = need.saturating_add(decoded).saturating_add(rows);
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(need),
    }
}

fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    // s starts after '{'; returns the labels and the rest after '}'.
    let mut labels = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return Err("unterminated label set".into());
        }
        if b[i] == b'}' {
            return Ok((labels, &s[i + 1..]));
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &s[start..i];
        if name.is_empty() || i >= b.len() || b[i] != b'=' {
            // At most 20 characters of context, cut on a character boundary (a byte
            // offset could fall inside `é` and panic).
            let near: String = s[start..].chars().take(20).collect();
            return Err(format!("bad label name near `{near}`"));
        }
        i += 1;
        if i >= b.len() || b[i] != b'"' {
            return Err(format!("label `{name}`: value must be quoted"));
        }
        i += 1;
        let mut v = String::new();
        loop {
            let Some(&c) = b.get(i) else {
                return Err(format!("label `{name}`: unterminated value"));
            };
            match c {
                b'"' => break,
                b'\\' => {
                    match b.get(i + 1) {
                        Some(b'n') => v.push('\n'),
                        Some(b'\\') => v.push('\\'),
                        Some(b'"') => v.push('"'),
                        _ => return Err(format!("label `{name}`: bad escape")),
                    }
                    i += 2;
                    continue;
                }
                _ => {
                    let ch = s[i..].chars().next().unwrap_or('?');
                    v.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
            }
        }
        i += 1;
        labels.insert(name.to_string(), v);
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad sample value `{v}`")),
    }
}

/// Parse one exposition line (`None` for comments and blank lines).
pub fn parse_text_line(line: &str, default_ts_us: i64) -> Option<Result<MetricRecord, String>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some((|| {
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| "a sample needs a value".to_string())?;
        let name = &line[..name_end];
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        {
            return Err(format!("bad metric name `{name}`"));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..])?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut parts = rest.split_whitespace();
        let value = parse_value(parts.next().ok_or("missing value")?)?;
        let ts = match parts.next() {
            Some(t) => t
                .parse::<i64>()
                .map_err(|_| format!("bad timestamp `{t}`"))?
                .saturating_mul(1000),
            None => default_ts_us,
        };
        if parts.next().is_some() {
            return Err("trailing fields after timestamp".into());
        }
        Ok(record(name.to_string(), labels, value, ts))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_series_are_counted_before_they_are_decoded() {
        // 1M empty series: 2 MB on the wire, ~50 MB of structs once decoded.
        let raw: Vec<u8> = [0x0a, 0x00].repeat(1_000_000);
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let e = decode_remote_write(&body, 4 << 20).unwrap_err();
        assert_eq!(e.0, 413, "{}", e.1);
        // A real request still decodes.
        let ok = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&ok.encode_to_vec())
            .unwrap();
        assert_eq!(decode_remote_write(&body, 4 << 20).unwrap().len(), 1);
        // Garbage on the wire is a 400, not a panic.
        let body = snap::raw::Encoder::new()
            .compress_vec(&[0x0a, 0xff])
            .unwrap();
        assert_eq!(decode_remote_write(&body, 4 << 20).unwrap_err().0, 400);
    }

    #[test]
    fn non_ascii_label_names_are_refused_not_a_panic() {
        // This line dropped the connection: an error message sliced inside `é`.
        let line = format!("up{{a{}=\"1\"}} 1", "é".repeat(12));
        let r = parse_text_line(&line, 0).unwrap();
        assert!(r.unwrap_err().contains("bad label name"));
    }

    #[test]
    fn text_format() {
        let r = parse_text_line(
            r#"http_requests_total{pool="gray",env="prod",path="/a\"b"} 1027 1700000000000"#,
            0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.name.as_str(), r.value, r.ts),
            ("http_requests_total", 1027.0, Micros(1_700_000_000_000_000))
        );
        assert_eq!((r.pool.as_str(), r.env.as_str()), ("gray", "prod"));
        assert_eq!(r.labels, r#"{"env":"prod","path":"/a\"b","pool":"gray"}"#);
        let r = parse_text_line("up 1", 5).unwrap().unwrap();
        assert_eq!((r.value, r.ts), (1.0, Micros(5)));
        assert!(parse_text_line("# HELP up x", 0).is_none());
        assert!(parse_text_line("", 0).is_none());
        for bad in [
            "up",
            "up{a=1} 2",
            "up{a=\"1\" 2",
            "up abc",
            "9bad 1",
            "up 1 2 3",
        ] {
            assert!(parse_text_line(bad, 0).unwrap().is_err(), "{bad}");
        }
        assert!(parse_text_line("x +Inf", 0)
            .unwrap()
            .unwrap()
            .value
            .is_infinite());
    }

    #[test]
    fn remote_write_roundtrip() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "node_load1".into(),
                    },
                    Label {
                        name: "instance".into(),
                        value: "h1:9100".into(),
                    },
                ],
                samples: vec![Sample {
                    value: 0.5,
                    timestamp: 1_700_000_000_123,
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let rows = decode_remote_write(&body, 1 << 20).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].host.as_str()),
            ("node_load1", "h1:9100")
        );
        assert_eq!(rows[0].ts, Micros(1_700_000_000_123_000));
        assert_eq!(decode_remote_write(b"garbage", 1 << 20).unwrap_err().0, 400);
        assert_eq!(decode_remote_write(&body, 4).unwrap_err().0, 413);
    }

    #[test]
    fn remote_write_label_amplification_is_refused() {
        // One 256 KiB label and 200k empty samples: ~0.5 MB decoded, ~50 GB as rows.
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "x".into(),
                    },
                    Label {
                        name: "big".into(),
                        value: "a".repeat(256 << 10),
                    },
                ],
                samples: vec![Sample::default(); 200_000],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        assert!(body.len() < 100_000, "{}", body.len());
        let (status, reason) = decode_remote_write(&body, 1 << 20).unwrap_err();
        assert_eq!(status, 413, "{reason}");
        assert!(reason.contains("fewer samples"), "{reason}");
    }
}
