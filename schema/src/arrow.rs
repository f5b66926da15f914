//! How row values become Arrow columns: one builder per column kind, and the Arrow type
//! of each (only with the `arrow` feature; the gateway builds without it).

use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder,
    UInt64Builder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, TimeUnit};

use crate::Micros;

/// How a column is stored: Rust type in the row, Arrow type in batches.
pub trait Column: Sized {
    /// The Arrow builder for this column kind.
    type Builder;
    /// A builder with room for `n` values.
    fn builder(n: usize) -> Self::Builder;
    /// Append one value.
    fn append(b: &mut Self::Builder, v: &Self);
    /// Finish into an array.
    fn finish(b: Self::Builder) -> ArrayRef;
}

macro_rules! column {
    ($t:ty, $builder:ty, $append:expr, $finish:expr) => {
        impl Column for $t {
            type Builder = $builder;
            fn builder(n: usize) -> $builder {
                <$builder>::with_capacity(n)
            }
            fn append(b: &mut $builder, v: &$t) {
                $append(b, v)
            }
            fn finish(b: $builder) -> ArrayRef {
                $finish(b)
            }
        }
    };
}

column!(
    u16,
    UInt16Builder,
    |b: &mut UInt16Builder, v: &u16| b.append_value(*v),
    |mut b: UInt16Builder| Arc::new(b.finish()) as ArrayRef
);
column!(
    u64,
    UInt64Builder,
    |b: &mut UInt64Builder, v: &u64| b.append_value(*v),
    |mut b: UInt64Builder| Arc::new(b.finish()) as ArrayRef
);
column!(
    f64,
    Float64Builder,
    |b: &mut Float64Builder, v: &f64| b.append_value(*v),
    |mut b: Float64Builder| Arc::new(b.finish()) as ArrayRef
);

/// Strings: the builder is sized by rows only; Arrow grows the value buffer.
impl Column for String {
    type Builder = StringBuilder;
    fn builder(n: usize) -> StringBuilder {
        StringBuilder::with_capacity(n, n * 16)
    }
    fn append(b: &mut StringBuilder, v: &String) {
        b.append_value(v)
    }
    fn finish(mut b: StringBuilder) -> ArrayRef {
        Arc::new(b.finish())
    }
}

impl Column for Micros {
    type Builder = TimestampMicrosecondBuilder;
    fn builder(n: usize) -> Self::Builder {
        TimestampMicrosecondBuilder::with_capacity(n)
    }
    fn append(b: &mut Self::Builder, v: &Micros) {
        b.append_value(v.0)
    }
    fn finish(mut b: Self::Builder) -> ArrayRef {
        Arc::new(b.finish().with_timezone("UTC"))
    }
}

column!(
    i64,
    Int64Builder,
    |b: &mut Int64Builder, v: &i64| b.append_value(*v),
    |mut b: Int64Builder| Arc::new(b.finish()) as ArrayRef
);

pub(crate) fn arrow_type<T: 'static>() -> DataType {
    use std::any::TypeId;
    let t = TypeId::of::<T>();
    if t == TypeId::of::<Micros>() {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    } else if t == TypeId::of::<String>() {
        DataType::Utf8
    } else if t == TypeId::of::<u16>() {
        DataType::UInt16
    } else if t == TypeId::of::<u64>() {
        DataType::UInt64
    } else if t == TypeId::of::<f64>() {
        DataType::Float64
    } else {
        DataType::Int64
    }
}
