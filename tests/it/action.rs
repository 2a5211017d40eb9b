//! The action and the binary agree: every input of action.yml is an option the binary
//! understands, every option the action should expose is an input, and every output an
//! action-mode run writes is declared.

use crate::common;
use crate::common::cmd::D1r2;

use std::collections::BTreeSet;

use clap::CommandFactory;
use d1r2::interface::Cli;

fn action_yml() -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(include_str!("../../action.yml")).expect("action.yml parses")
}

fn keys(v: &serde_yaml_ng::Value, section: &str) -> BTreeSet<String> {
    v[section]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn inputs_and_options_match() {
    let yml = action_yml();
    let inputs = keys(&yml, "inputs");
    let cli = Cli::command();
    let mut options = BTreeSet::new();
    for sub in cli.get_subcommands().chain([&cli]) {
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long()
                && !["help", "version", "verbose"].contains(&long)
            {
                options.insert(long.to_string());
            }
        }
    }
    for input in &inputs {
        assert!(
            d1r2::interface::ACTION_INPUTS.contains(&input.as_str()) || options.contains(input),
            "input {input} is not understood by the binary"
        );
    }
    for option in &options {
        assert!(
            inputs.contains(option),
            "option --{option} is not an input of action.yml"
        );
    }
    let commands: Vec<&str> = cli.get_subcommands().map(|s| s.get_name()).collect();
    let described = yml["inputs"]["command"]["description"].as_str().unwrap();
    for c in commands {
        assert!(
            described.contains(c),
            "the command input does not mention {c}"
        );
    }
    assert_eq!(yml["runs"]["using"].as_str(), Some("docker"));
}

#[test]
fn action_mode_runs_write_only_declared_outputs() {
    let declared = keys(&action_yml(), "outputs");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(&d.join("app.db"), include_str!("../fixtures/edge.sql"));
    let backups = d.join("backups");
    let runs: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("INPUT_COMMAND", "backup".into()),
            ("INPUT_SOURCE", d.join("app.db").display().to_string()),
            ("INPUT_DEST", backups.display().to_string()),
        ],
        vec![
            ("INPUT_COMMAND", "verify".into()),
            ("INPUT_FROM", backups.display().to_string()),
        ],
        vec![
            ("INPUT_COMMAND", "list".into()),
            ("INPUT_FROM", backups.display().to_string()),
        ],
        vec![
            ("INPUT_COMMAND", "export".into()),
            ("INPUT_FROM", backups.display().to_string()),
            ("INPUT_OUT", d.join("dump.sql").display().to_string()),
        ],
        vec![
            ("INPUT_COMMAND", "restore".into()),
            ("INPUT_FROM", backups.display().to_string()),
            ("INPUT_TO", d.join("r.db").display().to_string()),
            ("INPUT_FORCE", "false".into()),
        ],
        vec![
            ("INPUT_COMMAND", "check".into()),
            ("INPUT_FROM", backups.display().to_string()),
            ("INPUT_MAX-AGE", "1h".into()),
            ("INPUT_VERIFY", "true".into()),
        ],
        vec![
            ("INPUT_COMMAND", "verify".into()),
            ("INPUT_FROM", d.join("nowhere").display().to_string()),
        ],
    ];
    for (i, inputs) in runs.iter().enumerate() {
        let output = d.join(format!("output-{i}"));
        let summary = d.join(format!("summary-{i}"));
        let run = D1r2::new()
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .envs(inputs.iter().map(|(k, v)| (*k, v.as_str())))
            .run();
        let stdout = &run.stdout;
        let written = std::fs::read_to_string(&output).unwrap();
        let names: BTreeSet<String> = crate::common::parse_outputs(&written)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for name in &names {
            assert!(
                declared.contains(name),
                "run {i} wrote undeclared output {name}"
            );
        }
        assert!(
            stdout.contains(&format!("::group::d1r2 {}", inputs[0].1))
                && stdout.contains("::endgroup::"),
            "run {i}: {stdout}"
        );
        let summary = std::fs::read_to_string(&summary).unwrap();
        assert!(summary.starts_with("### d1r2 "), "{summary}");
        if i == runs.len() - 1 {
            assert_eq!(run.status.code(), Some(2));
            assert!(stdout.contains("::error::"), "{stdout}");
            assert!(names.contains("status") && written.contains("failure"));
        } else {
            assert!(run.status.success(), "run {i}: {stdout} {}", run.stderr);
            assert!(names.contains("status"));
        }
    }
}

#[test]
fn workflows_parse_and_use_only_declared_inputs() {
    let inputs = keys(&action_yml(), "inputs");
    let mut checked = 0;
    for dir in [".github/workflows", "examples/workflows"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let yml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            for job in yml["jobs"].as_mapping().expect("jobs").values() {
                for step in job["steps"].as_sequence().into_iter().flatten() {
                    let uses = step["uses"].as_str().unwrap_or("");
                    if uses.starts_with("d1r2/d1r2") || uses == "./" {
                        for key in step["with"]
                            .as_mapping()
                            .into_iter()
                            .flatten()
                            .map(|(k, _)| k)
                        {
                            let key = key.as_str().unwrap();
                            assert!(
                                inputs.contains(key),
                                "{}: input {key} is not in action.yml",
                                path.display()
                            );
                        }
                    }
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} workflow files found");
}

/// Markdown tables of the action's inputs and outputs, from action.yml.
fn tables_from_action_yml() -> String {
    let yml = action_yml();
    let cell = |v: &serde_yaml_ng::Value| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.as_bool().map(|b| b.to_string()))
            .unwrap_or_default()
            .replace('|', "\\|")
            .replace('\n', " ")
    };
    let mut md = String::from("| input | required | default | description |\n|---|---|---|---|\n");
    for (name, input) in yml["inputs"].as_mapping().unwrap() {
        md.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            cell(name),
            if input["required"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            match cell(&input["default"]) {
                d if d.is_empty() => String::new(),
                d => format!("`{d}`"),
            },
            cell(&input["description"])
        ));
    }
    md.push_str("\n| output | description |\n|---|---|\n");
    for (name, output) in yml["outputs"].as_mapping().unwrap() {
        md.push_str(&format!(
            "| `{}` | {} |\n",
            cell(name),
            cell(&output["description"])
        ));
    }
    md
}

#[test]
fn readme_tables_are_generated_from_action_yml() {
    let begin = "<!-- generated from action.yml: begin -->\n";
    let end = "<!-- generated from action.yml: end -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme.find(begin).expect("README has the begin marker") + begin.len();
    let stop = readme.find(end).expect("README has the end marker");
    let generated = tables_from_action_yml();
    if readme[start..stop] != generated {
        if std::env::var("D1R2_BLESS").is_ok_and(|v| v == "1") {
            let updated = format!("{}{generated}{}", &readme[..start], &readme[stop..]);
            std::fs::write(path, updated).unwrap();
        } else {
            panic!(
                "README's action tables differ from action.yml; run `D1R2_BLESS=1 cargo test --test it action::readme`"
            );
        }
    }
}

/// The hardening the linters in `.ci/run` check, held here too so `cargo test` alone catches a
/// regression: least privilege declared at the top of every workflow, actions of the project's
/// own workflows pinned by commit, and no step output expanded into a script (an output such as
/// `error` or `body` can carry a remote server's text).
#[test]
fn workflows_are_hardened() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [".github/workflows", "examples/workflows"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let yml: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let name = path.display();
            assert!(
                yml.get("permissions").is_some(),
                "{name}: no top-level permissions"
            );
            for job in yml["jobs"].as_mapping().unwrap().values() {
                for step in job["steps"].as_sequence().into_iter().flatten() {
                    if let Some(script) = step["run"].as_str() {
                        assert!(
                            !script.replace("${{ ", "${{").contains("${{steps."),
                            "{name}: a step output expanded inside run: {script}"
                        );
                    }
                    let Some(uses) = step["uses"].as_str() else {
                        continue;
                    };
                    let (action, reference) = uses.split_once('@').expect("uses names a ref");
                    let pinned =
                        reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit());
                    assert!(
                        pinned || (dir == "examples/workflows" && action == "d1r2/d1r2"),
                        "{name}: {uses} is not pinned by commit"
                    );
                    if action == "actions/checkout" {
                        assert!(
                            step["with"]["persist-credentials"].as_bool().is_some(),
                            "{name}: checkout without an explicit persist-credentials"
                        );
                    }
                }
            }
        }
    }
}

/// release.yml's rewriting of action.yml (`scripts/pin-image`), run on a copy: the result is a
/// Docker action whose image is the published one by digest (what the runner pulls, never a
/// Dockerfile to build), with every input and output as before; a reference that is not
/// `docker://ghcr.io/…@sha256:<64 hex>` (a mutable tag) is refused, leaving the file unchanged.
#[test]
fn release_pins_the_image_by_digest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let original = std::fs::read_to_string(root.join("action.yml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("action.yml");
    let pin = |image: &str| {
        std::fs::write(&copy, &original).unwrap();
        let status = std::process::Command::new(root.join("scripts/pin-image"))
            .arg(image)
            .arg(&copy)
            .status()
            .unwrap();
        (status, std::fs::read_to_string(&copy).unwrap())
    };
    let digest: String = (0..64)
        .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16)]))
        .collect();
    let owner = format!("o{}", rand::random_range(0..1_000_000u32));
    let image = format!("docker://ghcr.io/{owner}/d1r2@sha256:{digest}");

    let (status, text) = pin(&image);
    assert!(status.success(), "{image}");
    let pinned: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("parses");
    let before = action_yml();
    assert_eq!(pinned["runs"]["using"].as_str(), Some("docker"));
    assert_eq!(pinned["runs"]["image"].as_str(), Some(image.as_str()));
    assert_eq!(pinned["runs"].as_mapping().unwrap().len(), 2, "{text}");
    for section in ["name", "description", "inputs", "outputs", "branding"] {
        assert_eq!(pinned[section], before[section], "{section} changed");
    }

    for refused in [
        format!("docker://ghcr.io/{owner}/d1r2:v1.2.3"),
        format!("docker://ghcr.io/{owner}/d1r2@sha256:{}", &digest[1..]),
        format!("ghcr.io/{owner}/d1r2@sha256:{digest}"),
        format!("docker://ghcr.io/{owner}/d1r2@sha256:{digest}\n  using: node24"),
    ] {
        let (status, text) = pin(&refused);
        assert_eq!(status.code(), Some(2), "{refused:?} was accepted");
        assert_eq!(text, original, "{refused:?} changed action.yml");
    }
}

/// Secrets reach only the steps that use them: never a workflow's or a job's `env:` (every step
/// of it, upload-artifact included, would get them), never a d1r2 step's `with:` (inputs are
/// logged and reach the container as INPUT_* without the runner's masking guarantees).
#[test]
fn secrets_only_in_the_steps_env() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let has_secret = |v: &serde_yaml_ng::Value| {
        serde_yaml_ng::to_string(v)
            .unwrap()
            .replace(' ', "")
            .contains("secrets.")
    };
    let mut d1r2_steps = 0;
    for dir in [".github/workflows", "examples/workflows"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let yml: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let name = path.display();
            assert!(
                !has_secret(&yml["env"]),
                "{name}: a secret in the workflow's env"
            );
            for (id, job) in yml["jobs"].as_mapping().unwrap() {
                assert!(
                    !has_secret(&job["env"]),
                    "{name}: a secret in job {id:?}'s env"
                );
                for step in job["steps"].as_sequence().into_iter().flatten() {
                    if step["uses"].as_str().unwrap_or("").starts_with("d1r2/d1r2") {
                        d1r2_steps += 1;
                        assert!(
                            !has_secret(&step["with"]),
                            "{name}: a secret in with: {step:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(d1r2_steps >= 8, "only {d1r2_steps} d1r2 steps found");
}
