//! `syncctl versions PATH [--target NAME]`: the versions each target keeps of a path (a
//! target's `versions`), read at the target with `rsync --list-only`.

use syncd_proto::{ByteBuf, ErrorKind, KeptVersion, Response, TargetVersions, VersionsList};

use super::err;
use crate::engine::EngineView;

pub(super) async fn versions(engine: &EngineView, target: Option<&str>, path: ByteBuf) -> Response {
    let chosen = match super::chosen(engine, target, Some(path), super::Names::Any) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let rel = chosen.first().map(|(_, s)| s.clone()).unwrap_or_default();
    if rel.is_empty() {
        return err(
            ErrorKind::BadRequest,
            "name a file inside a root, not the root itself",
        );
    }
    let mut targets = Vec::new();
    for (t, _) in chosen {
        let dir = t.runner.target.versions.clone();
        let mut tv = TargetVersions {
            target: t.id.clone(),
            dir: dir.clone(),
            versions: Vec::new(),
            error: None,
        };
        if dir.is_some() {
            match t.runner.versions_of(&rel).await {
                Ok(v) => {
                    tv.versions = v
                        .into_iter()
                        .map(|(run, size)| KeptVersion { run, size })
                        .collect()
                }
                Err(o) => tv.error = o.message().map(str::to_string),
            }
        }
        targets.push(tv);
    }
    Response::Versions(VersionsList {
        path: ByteBuf::from(rel),
        targets,
    })
}
