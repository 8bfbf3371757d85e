//! `aurum registry …`: the project's model registry from the command line,
//! and syncing it with an MLflow server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use registry::{MlflowClient, NewVersion, Registry};

use crate::project::ProjectArg;

/// Options of `aurum registry`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    project: ProjectArg,
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RegistryCommand {
    /// List the registered models with their versions and aliases.
    List,
    /// Show a model's versions (or one version's metadata as JSON).
    Show {
        /// The model.
        model: String,
        /// One version, printed whole.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Register an ONNX file as the next version of a model.
    Register {
        /// The model.
        model: String,
        /// The ONNX file.
        file: PathBuf,
        /// The features feeding the model's input, in column order:
        /// `view:feature` references, comma-separated.
        #[arg(long, default_value = "")]
        features: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Point an alias (champion, challenger, …) at a version.
    Alias {
        /// The model.
        model: String,
        /// The alias.
        alias: String,
        /// The version.
        version: u64,
    },
    /// Move an alias (default: champion) back to the version it pointed at
    /// before.
    Rollback {
        /// The model.
        model: String,
        /// The alias.
        #[arg(long, default_value = registry::CHAMPION)]
        alias: String,
    },
    /// Print every alias move of a model: when, who, from, to.
    History {
        /// The model.
        model: String,
    },
    /// Delete a version (refused while an alias points at it), or the
    /// whole model (refused while it has aliases).
    Delete {
        /// The model.
        model: String,
        /// Only this version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Register this registry's versions and aliases of a model in an
    /// MLflow server.
    Push {
        /// The model.
        model: String,
        /// The MLflow tracking server, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        mlflow_uri: String,
    },
    /// Import a model's ONNX versions and aliases from an MLflow server.
    Pull {
        /// The model.
        model: String,
        /// The MLflow tracking server, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        mlflow_uri: String,
        /// Features of versions that carry no aurum.features tag:
        /// `view:feature` references, comma-separated.
        #[arg(long, default_value = "")]
        features: String,
    },
}

fn refs(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Who the CLI records as moving an alias.
fn who() -> String {
    std::env::var("AURUM_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "cli".to_string())
}

pub async fn run(args: RegistryArgs) -> Result<()> {
    let project = args.project.load()?;
    let registry = aurum::project_registry::open(&project)?;
    match args.command {
        RegistryCommand::List => list(&registry)?,
        RegistryCommand::Show { model, version } => match version {
            Some(version) => {
                let v = registry.version(&model, version)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            None => show_versions(&registry, &model)?,
        },
        RegistryCommand::Register {
            model,
            file,
            features,
            description,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let v = registry.register(
                &model,
                &bytes,
                NewVersion {
                    description,
                    features: refs(&features),
                    source: file.display().to_string(),
                    ..NewVersion::default()
                },
            )?;
            println!("registered {model} v{} (sha256 {})", v.version, v.sha256);
        }
        RegistryCommand::Alias {
            model,
            alias,
            version,
        } => {
            let change = registry.set_alias(&model, &alias, version, &who())?;
            println!("{model}@{alias}: {} -> v{version}", from(change.from));
        }
        RegistryCommand::Rollback { model, alias } => {
            let change = registry.rollback(&model, &alias, &who())?;
            println!(
                "{model}@{alias}: rolled back {} -> v{}",
                from(change.from),
                change.to.unwrap_or_default()
            );
        }
        RegistryCommand::History { model } => history(&registry, &model)?,
        RegistryCommand::Delete { model, version } => match version {
            Some(version) => {
                registry.delete_version(&model, version)?;
                println!("deleted {model} v{version}");
            }
            None => {
                registry.delete_model(&model)?;
                println!("deleted model {model}");
            }
        },
        RegistryCommand::Push { model, mlflow_uri } => {
            let report = MlflowClient::new(&mlflow_uri)?
                .push(&registry, &model)
                .await?;
            for (local, remote) in &report.copied {
                println!("pushed {model} v{local} as MLflow version {remote}");
            }
            println!(
                "{} pushed, {} already there; aliases set: {}",
                report.copied.len(),
                report.skipped,
                aliases(&report.aliases)
            );
        }
        RegistryCommand::Pull {
            model,
            mlflow_uri,
            features,
        } => {
            let report = MlflowClient::new(&mlflow_uri)?
                .pull(&registry, &model, &refs(&features))
                .await?;
            for (local, remote) in &report.copied {
                println!("pulled MLflow version {remote} of {model} as v{local}");
            }
            println!(
                "{} pulled, {} already here; aliases set: {}",
                report.copied.len(),
                report.skipped,
                aliases(&report.aliases)
            );
        }
    }
    Ok(())
}

/// `aurum registry list`: each model's versions and aliases.
fn list(registry: &Registry) -> Result<()> {
    for name in registry.models()? {
        let versions = registry.versions(&name)?;
        let aliases: Vec<String> = registry
            .aliases(&name)?
            .iter()
            .map(|(alias, v)| format!("{alias}=v{v}"))
            .collect();
        println!(
            "{name}: {} version(s), latest v{}; aliases: {}",
            versions.len(),
            versions.last().map_or(0, |v| v.version),
            if aliases.is_empty() {
                "none".to_string()
            } else {
                aliases.join(", ")
            }
        );
    }
    Ok(())
}

/// `aurum registry show MODEL`: one line per version, with the aliases
/// pointing at it.
fn show_versions(registry: &Registry, model: &str) -> Result<()> {
    let aliases = registry.aliases(model)?;
    for v in registry.versions(model)? {
        let pointing: Vec<&str> = aliases
            .iter()
            .filter(|(_, n)| **n == v.version)
            .map(|(a, _)| a.as_str())
            .collect();
        println!(
            "v{} {} {} sha256 {} features {} {}{}",
            v.version,
            v.created_at,
            v.status.as_str(),
            &v.sha256.get(..12).unwrap_or("-"),
            v.features.len(),
            v.description,
            if pointing.is_empty() {
                String::new()
            } else {
                format!(" [{}]", pointing.join(", "))
            }
        );
    }
    Ok(())
}

/// `aurum registry history MODEL`: every alias move.
fn history(registry: &Registry, model: &str) -> Result<()> {
    for c in registry.alias_history(model)? {
        println!(
            "{} {} {}@{}: {} -> {}{}",
            c.at,
            c.who,
            model,
            c.alias,
            from(c.from),
            c.to.map_or("(deleted)".to_string(), |v| format!("v{v}")),
            if c.rollback { " (rollback)" } else { "" }
        );
    }
    Ok(())
}

fn from(version: Option<u64>) -> String {
    version.map_or("(none)".to_string(), |v| format!("v{v}"))
}

fn aliases(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(a, v)| format!("{a}=v{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
