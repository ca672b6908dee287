//! Configuration: the file model (serde), units, loading with locations, and validation.
//!
//! [`load()`] reads a file, parses it, runs every check and returns a [`Config`] or every problem
//! found ([`Diagnostics`]), each with its key path, line and a fix. A config with any problem is
//! rejected whole.

pub mod diagnostics;
mod load;
pub mod model;
mod serde_errors;
pub mod source_map;
pub mod units;
mod validate;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use load::{load, load_str, Config};
pub use source_map::SourceMap;
