//! Configuration: the file model (serde), units, loading with locations, and validation.

pub mod model;
pub mod units;
