//! The config center's model, pure: content types with validation and merge
//! ([`format`]), `${global.NAME}` variables ([`vars`]), files with their FV/PV and
//! immutable releases, inheritance and its dependency tree ([`model`]), and who gets a
//! gray release ([`gray`]). Contents are blobs the control plane stores; nothing here
//! does IO.

pub mod format;
pub mod gray;
pub mod model;
pub mod vars;

pub use format::{ContentType, FormatError};
pub use gray::{Client, GrayTarget};
pub use model::{
    effective, segment_ok, ConfigDoc, ConfigFile, Draft, FileKey, Globals, GrayRelease, Release,
    ReleaseKind, MAX_FILE,
};
