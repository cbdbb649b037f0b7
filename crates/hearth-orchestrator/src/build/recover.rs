//! What a node built before it restarted: its templates, registered again.

use hearth_vmm::Template;

use crate::sandboxes::SandboxManager;

/// Registers the templates this node built before (the newest build of each
/// is its current one) and removes what unfinished builds left. Returns how
/// many templates it found.
pub fn recover_built_templates(manager: &SandboxManager) -> usize {
    let data = &manager.runtime().data;
    let _ = std::fs::remove_dir_all(data.root().join("v1/tmp"));
    let Ok(entries) = std::fs::read_dir(data.templates()) else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let id = entry.file_name().to_string_lossy().into_owned();
        if id == crate::runtime::BASE_TEMPLATE || id.starts_with('.') {
            continue;
        }
        let Ok(builds) = std::fs::read_dir(entry.path()) else {
            continue;
        };
        let mut opened: Vec<(std::time::SystemTime, Template)> = Vec::new();
        for build in builds.filter_map(|e| e.ok()) {
            let path = build.path();
            if build
                .file_name()
                .to_string_lossy()
                .starts_with(".building-")
            {
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            let Ok(template) = Template::open(&id, &path) else {
                continue;
            };
            let written = std::fs::metadata(path.join(hearth_vmm::template::META))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            opened.push((written, template));
        }
        opened.sort_by_key(|(written, _)| *written);
        if let Some((_, newest)) = opened.pop() {
            for (_, older) in opened {
                manager.register_build(older);
            }
            manager.register_template(newest);
            found += 1;
        }
    }
    found
}
