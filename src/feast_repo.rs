//! `aurum feast-repo DIR`: a Feast feature repository for the project, so
//! Feast's SDK (`feast apply`, `get_online_features`,
//! `get_historical_features`) works against a running `aurum serve`
//! without writing anything by hand.
//!
//! It writes `feature_store.yaml` (remote online store = aurum's HTTP
//! server, remote offline store = aurum's Flight service, a local registry
//! file) and `features.py`: one `Entity` per entity, one `FeatureView` per
//! view over a `FileSource` in Delta format at the view's gold table (named
//! after the view, which is how aurum's Flight service finds it), and one
//! `FeatureService` per feature service.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use feature_store::Project;
use feature_store::project::{ColumnType, ViewSpec};
use feature_store::schema::split_ref;

use crate::project::ProjectArg;

/// Options of `aurum feast-repo`.
#[derive(Debug, clap::Args)]
pub struct FeastRepoArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// The directory to write the repository to (created if missing).
    dir: PathBuf,
    /// The URL of `aurum serve`'s HTTP server (Feast's online store).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The host:port of `aurum serve`'s Flight service (Feast's offline
    /// store).
    #[arg(long, default_value = "127.0.0.1:8815")]
    flight: String,
    /// Replace files written by an earlier run.
    #[arg(long)]
    force: bool,
}

/// Runs `aurum feast-repo`.
pub async fn run(args: FeastRepoArgs) -> Result<()> {
    let project = args.project.load()?;
    let Some((host, port)) = args.flight.rsplit_once(':') else {
        bail!("--flight {:?} is not host:port", args.flight);
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("--flight {:?}: {port:?} is not a port", args.flight))?;
    let store = project.delta_store()?;
    let yaml = feature_store_yaml(&project, &args.url, host, port);
    let definitions = definitions(&project, &|view| store.table_location(view))?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    for (name, text) in [("feature_store.yaml", yaml), ("features.py", definitions)] {
        write_new(&args.dir.join(name), &text, args.force)?;
    }
    println!(
        "wrote a Feast repository for {} to {}: run `feast apply` there while `aurum serve` runs",
        project.name,
        args.dir.display()
    );
    Ok(())
}

fn write_new(path: &Path, text: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A Feast project name: letters, digits and underscores.
fn feast_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn feature_store_yaml(project: &Project, url: &str, host: &str, port: u16) -> String {
    format!(
        "# Written by `aurum feast-repo` for the aurum project {name:?}: Feast's SDK reads\n\
         # online features from, and pulls training sets through, a running `aurum serve`.\n\
         project: {project}\n\
         registry: registry.db\n\
         provider: local\n\
         online_store:\n  type: remote\n  path: {url}\n\
         offline_store:\n  type: remote\n  host: {host}\n  port: {port}\n\
         entity_key_serialization_version: 3\n",
        name = project.name,
        project = feast_name(&project.name),
    )
}

/// `features.py`: the project's entities, views and services as Feast
/// definitions; `gold` gives a view's gold table location.
fn definitions(project: &Project, gold: &dyn Fn(&str) -> String) -> Result<String> {
    let mut py = String::new();
    py.push_str(
        "# Written by `aurum feast-repo` from the aurum project's aurum.toml; run it again\n\
         # (with --force) after changing the project rather than editing this file.\n\
         from datetime import timedelta\n\n\
         from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType\n\
         from feast.data_format import DeltaFormat\n\
         from feast.types import Bool, Float64, Int64, String\n\n",
    );
    for entity in &project.entities {
        let key_types: Vec<&str> = entity
            .join_keys
            .iter()
            .map(|key| key_type(project, &entity.name, key))
            .collect();
        // Feast gives an entity one value type; a composite key's parts
        // are typed by the views' schemas.
        let value_type = match key_types.as_slice() {
            [one] => format!(", value_type=ValueType.{}", value_type(one)),
            _ => String::new(),
        };
        writeln!(
            py,
            "entity_{name} = Entity(name={name:?}, join_keys={keys:?}{value_type})\n",
            name = entity.name,
            keys = entity.join_keys,
        )?;
    }
    for view in &project.feature_views {
        let mut fields = Vec::new();
        for key in &view.entity.join_keys {
            fields.push(format!(
                "        Field(name={key:?}, dtype={}),",
                feast_type(key_type(project, &view.entity.name, key))
            ));
        }
        for (feature, ty) in view.feature_names().iter().zip(view.feature_types()) {
            fields.push(format!(
                "        Field(name={feature:?}, dtype={}),",
                feast_type(&ty)
            ));
        }
        let feature_view = view.feature_view();
        writeln!(
            py,
            "view_{name}_source = FileSource(\n    name={name:?},\n    path={path:?},\n    \
             file_format=DeltaFormat(),\n    timestamp_field={ts:?},\n    \
             created_timestamp_column={created:?},\n)\n\n\
             view_{name} = FeatureView(\n    name={name:?},\n    entities=[entity_{entity}],\n    \
             ttl=timedelta(seconds={ttl}),\n    schema=[\n{fields}\n    ],\n    \
             source=view_{name}_source,\n    online=True,\n)\n",
            name = view.name,
            path = gold(&view.name),
            ts = feature_view.timestamp_column,
            created = feature_view.created_column,
            entity = view.entity.name,
            ttl = view.ttl.as_secs(),
            fields = fields.join("\n"),
        )?;
    }
    for service in &project.feature_services {
        let mut projections: Vec<(String, Vec<String>)> = Vec::new();
        for reference in &service.features {
            let (view, feature) = split_ref(reference)
                .with_context(|| format!("feature service {}: {reference:?}", service.name))?;
            match projections.iter_mut().find(|(v, _)| v == view) {
                Some((_, features)) => features.push(feature.to_string()),
                None => projections.push((view.to_string(), vec![feature.to_string()])),
            }
        }
        let features: Vec<String> = projections
            .iter()
            .map(|(view, features)| format!("view_{view}[{features:?}]"))
            .collect();
        writeln!(
            py,
            "service_{name} = FeatureService(name={name:?}, features=[{features}])\n",
            name = service.name,
            features = features.join(", "),
        )?;
    }
    Ok(py)
}

/// The Feast value type of an entity's join key: its column's type in the
/// source of a view of the entity (`string` when no source declares it).
fn key_type<'a>(project: &'a Project, entity: &str, key: &str) -> &'a str {
    project
        .feature_views
        .iter()
        .filter(|v: &&ViewSpec| v.entity.name == entity)
        .filter_map(|v| project.source(&v.source))
        .flat_map(|s| s.columns.iter())
        .find(|c| c.name == key)
        .map(|c| match c.ty {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            _ => "string",
        })
        .unwrap_or("string")
}

/// A Feast `ValueType` for one of aurum's value types.
fn value_type(ty: &str) -> &'static str {
    match ty {
        "int64" => "INT64",
        "float64" => "DOUBLE",
        "bool" => "BOOL",
        _ => "STRING",
    }
}

/// A Feast type for one of aurum's value types.
fn feast_type(ty: &str) -> &'static str {
    match ty {
        "int64" => "Int64",
        "float64" => "Float64",
        "bool" => "Bool",
        _ => "String",
    }
}
