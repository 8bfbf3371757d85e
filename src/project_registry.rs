//! The project's model registry: under `[storage]` when the project has
//! one (its `registry/` prefix), in the local data directory otherwise.

use anyhow::Result;
use feature_store::Project;
use registry::Registry;

/// Opens the project's registry where the project keeps it.
pub fn open(project: &Project) -> Result<Registry> {
    Ok(match project.registry_location()? {
        Some(location) if !location.is_local() => Registry::on_object_store(
            location.store(),
            location.object_path(),
            &location.to_string(),
        ),
        Some(location) => Registry::open(
            location
                .url()
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("{location} is not a local directory"))?,
        )?,
        None => Registry::open(project.registry_dir())?,
    })
}
