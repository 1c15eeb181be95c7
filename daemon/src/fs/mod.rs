//! What every stage shares about the file system: relative paths as bytes, the identity of
//! a source root, and what an `lstat` tells of a change (stat). Below every other module: it
//! uses none of them.

pub mod identity;
pub mod paths;
pub mod stat;

pub use identity::{check_root, dir_is_empty, RootIdentity, RootUnavailable};
pub use paths::{
    abs_path, common_dir, dir_of, is_prefix_dir, join_rel, name_of, parents, rel_path, walk_order,
};
pub use stat::{Kind, Stat};
