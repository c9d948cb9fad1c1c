//! The `gatekeeper` binary: `serve` (the default), `migrate`, `token`,
//! `audit verify`, `catalog import`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use gatekeeper::auth::{mint, DevKeys, MintClaims, Role};
use gatekeeper::config::Config;
use gatekeeper::startup::Application;
use gatekeeper::store::Store;

/// mimalloc rather than glibc's malloc: under load, glibc's allocator took
/// about a third of the blocking pool's threads (`_int_malloc`, `malloc`)
/// and a fifth of the ledger writer's (`_int_free`, `cfree`), freeing what
/// other threads allocated (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gatekeeper",
    version,
    about = "Screens licence transactions against sanctions-style designations"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database and serve the API (what a bare `gatekeeper` does).
    Serve,
    /// Apply pending migrations (and install the shipped catalogue), then exit.
    Migrate,
    /// Print a token signed with the development key (development mode only).
    Token(TokenArgs),
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Catalogue tools.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Put many catalogue entries at once (GATEKEEPER_DATABASE_URL), in one
    /// audited commit: one `catalog.*.put` event per entry, as the admin API
    /// would write them. Reads NDJSON, one `{"kind", "id", "spec"}` a line
    /// (`kind`: reseller, organization, relationship (id `source/target`),
    /// product or designation; `spec`: the admin route's request body). An
    /// invalid line or catalogue writes nothing.
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The NDJSON file.
    file: std::path::PathBuf,
    /// Who imports, recorded as the events' actor (`cli:<sub>`, role admin).
    #[arg(long, default_value = "operator")]
    sub: String,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain: in the database (GATEKEEPER_DATABASE_URL),
    /// or in an NDJSON export (--file, offline). Exits 1 if it does not verify.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// An NDJSON export (GET /v1/audit with Accept: application/x-ndjson) to
    /// verify offline, without a database. Each line must be exactly its
    /// event's RFC 8785 canonical JSON, at most 16 MiB; an empty file fails.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Signed checkpoints kept elsewhere (the body of GET /v1/audit/checkpoints,
    /// a JSON array, or one per line; at most 64 MiB): the chain must agree
    /// with each.
    #[arg(long)]
    checkpoints: Option<std::path::PathBuf>,
    /// The public keys to trust (a JWKS, as GET /v1/keys returns it, kept
    /// apart from the checkpoints): the only keys a checkpoint may be signed
    /// with. Required with --file and --checkpoints; on the database,
    /// without it, the keys the service's configuration names (as `serve`
    /// reads it) are trusted. Keys inside the checkpoints file never are.
    #[arg(long)]
    keys: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Reseller,
    Integrator,
    Compliance,
    Admin,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The role the token grants.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The tenant, required for reseller and integrator tokens.
    #[arg(long)]
    reseller: Option<String>,
    /// The subject (who the caller is); defaults to `dev-<role>`.
    #[arg(long)]
    sub: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatekeeper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            gatekeeper::telemetry::init(&config.log_format);
            let app = Application::build(&config)?;
            tracing::info!(
                listen = %config.listen,
                database = %config.database_url.redacted(),
                "gatekeeper is serving"
            );
            actix_web::rt::System::new().block_on(app.run_until_stopped())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            gatekeeper::telemetry::init(&config.log_format);
            let store = Store::connect(&config.database_url, 1)?;
            store.migrate()?;
            tracing::info!(database = %config.database_url.redacted(), "migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => {
            println!("{}", token(&config, args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog {
            command: CatalogCommand::Import(args),
        } => {
            println!("{}", import(&config, args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => {
            let report = verify(&config, args)?;
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            if report.fault == Some(gatekeeper::audit::Fault::Empty) {
                eprintln!(
                    "gatekeeper: the export holds no event, so there is no chain to verify \
                     (export with GET /v1/audit and Accept: application/x-ndjson, unfiltered)"
                );
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn verify(config: &Config, args: VerifyArgs) -> anyhow::Result<gatekeeper::audit::Report> {
    // Keys beside the checkpoints in their file are not trusted: whoever
    // wrote the checkpoints could have written the keys.
    let checkpoints = match &args.checkpoints {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            gatekeeper::audit::read_checkpoints(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let keys = match &args.keys {
        Some(path) => gatekeeper::signing::read_jwks_file(path).context("--keys")?,
        None => Vec::new(),
    };
    match &args.file {
        Some(path) => {
            if args.checkpoints.is_some() && args.keys.is_none() {
                bail!(
                    "--checkpoints with --file needs --keys: the JWKS of the keys you trust \
                     (GET /v1/keys, kept apart from the checkpoints); keys in the checkpoints \
                     file are not trusted"
                );
            }
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            Ok(gatekeeper::audit::verify_ndjson(
                std::io::BufReader::new(file),
                &checkpoints,
                &keys,
            )?)
        }
        None => {
            // The database: the keys given, else those the service's own
            // configuration names (never rows of the database).
            let keys = match args.keys {
                Some(_) => keys,
                None => {
                    let configured = gatekeeper::startup::configured_keys(config)?;
                    if configured.is_empty() {
                        eprintln!(
                            "gatekeeper: no licence key is configured (GATEKEEPER_LICENSE_KEY_FILE, \
                             GATEKEEPER_LICENSE_RETIRED_KEYS_FILE) or in the data folder, so no \
                             checkpoint can verify; pass --keys with the JWKS you trust"
                        );
                    }
                    configured
                }
            };
            let store = Store::connect(&config.database_url, 1)?;
            Ok(store.verify_chain(&checkpoints, &keys)?)
        }
    }
}

fn import(config: &Config, args: ImportArgs) -> anyhow::Result<serde_json::Value> {
    use gatekeeper::domain::Actor;
    use gatekeeper::policy::CatalogChange;
    use gatekeeper::store::StoreError;
    use std::io::BufRead as _;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut changes = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", args.file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let change = serde_json::from_str::<serde_json::Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|entry| {
                let text = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
                CatalogChange::put(&text("kind"), &text("id"), entry["spec"].clone())
            })
            .map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        changes.push(change);
    }
    if changes.is_empty() {
        bail!("{} holds no entries", args.file.display());
    }
    let store = Store::connect(&config.database_url, 1)?;
    store.migrate()?;
    let actor = Actor {
        sub: format!("cli:{}", args.sub),
        role: "admin".into(),
        reseller: None,
    };
    // A change that can reach a licence opens its impact run with it; a
    // serving replica's runner carries it out.
    let opened = |conn: &mut _, head: &mut _, applied: &_| {
        gatekeeper::gate::impact::open_run_for(conn, head, applied).map(|_| ())
    };
    match store.import_catalog(&actor, changes, opened) {
        Ok(applied) => Ok(serde_json::json!({
            "imported": applied.created.len(),
            "created": applied.created.iter().filter(|c| **c).count(),
            "catalog_version": applied.catalog.version().to_string(),
            "audit_seqs": [applied.audit_seqs.first(), applied.audit_seqs.last()],
        })),
        Err(StoreError::Invalid(issues)) => {
            let shown: Vec<String> = issues.iter().take(20).map(|i| i.to_string()).collect();
            bail!(
                "the catalogue would be invalid ({} issues; nothing written):\n{}",
                issues.len(),
                shown.join("\n")
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn token(config: &Config, args: TokenArgs) -> anyhow::Result<String> {
    if !config.development() {
        bail!(
            "`gatekeeper token` mints development tokens only; with GATEKEEPER_JWT_PUBLIC_KEY_FILE, \
             GATEKEEPER_JWT_JWKS_URL or GATEKEEPER_OIDC_ISSUER set, tokens come from your \
             identity provider"
        );
    }
    let role = match args.role {
        RoleArg::Reseller => Role::Reseller,
        RoleArg::Integrator => Role::Integrator,
        RoleArg::Compliance => Role::Compliance,
        RoleArg::Admin => Role::Admin,
    };
    if role.is_tenant() && args.reseller.is_none() {
        bail!("--role {} needs --reseller ID", role.as_str());
    }
    if args.ttl <= 0 {
        bail!("--ttl must be a positive number of seconds");
    }
    let keys = DevKeys::in_dir(&config.data_dir);
    keys.ensure()?;
    let now = chrono::Utc::now().timestamp();
    let claims = MintClaims {
        iss: config.jwt_issuer.clone(),
        aud: config.jwt_audience.clone(),
        sub: args.sub.unwrap_or_else(|| format!("dev-{}", role.as_str())),
        role,
        reseller: if role.is_tenant() {
            args.reseller
        } else {
            None
        },
        iat: now,
        exp: now + args.ttl,
    };
    mint(&keys.private_pem()?, &claims).context("minting the token")
}
