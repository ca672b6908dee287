//! Configuration: the file model (serde), units, loading with locations, and validation.

pub mod model;
pub mod units;

use std::path::PathBuf;
use std::sync::Arc;

/// A loaded, validated configuration. (Placeholder until the loader lands; same fields.)
pub struct Config {
    pub file: model::FileConfig,
    pub path: Option<PathBuf>,
    pub base_dir: PathBuf,
    pub version: String,
    pub source: Arc<()>,
}
