//! What every stage shares about the file system: relative paths as bytes, and the identity of
//! a source root. Below every other module: it uses none of them.

pub mod identity;
pub mod paths;

pub use identity::{check_root, dir_is_empty, RootIdentity, RootUnavailable};
pub use paths::{abs_path, common_dir, is_prefix_dir, join_rel, parents};
