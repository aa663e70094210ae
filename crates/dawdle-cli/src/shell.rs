//! `dawdle shell`: an interactive shell over the jobs database, with
//! Procrastinate's shell commands and filters (so muscle memory carries
//! over) plus dawdle's own. `dawdle shell COMMAND ARGS…` runs one command
//! and exits, for scripts.

use std::process::ExitCode;

use dawdle::admin::{self, Grouping, JobFilter};
use dawdle::text::quote;
use dawdle::JobStatus;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use sqlx::PgPool;

use crate::database::jobs_pool;
use crate::{ops, Failure};

/// Every command: name, arguments, what it does.
const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "list_jobs",
        "[id=ID] [queue=Q] [task=T] [status=S] [lock=L] [queueing_lock=K] [details]",
        "list jobs (oldest first, at most 1000)",
    ),
    (
        "list_queues",
        "[queue=Q] [task=T] [status=S] [lock=L]",
        "job counts by status, per queue",
    ),
    (
        "list_tasks",
        "[queue=Q] [task=T] [status=S] [lock=L]",
        "job counts by status, per task",
    ),
    (
        "list_locks",
        "[queue=Q] [task=T] [status=S] [lock=L]",
        "job counts by status, per lock",
    ),
    ("retry", "ID", "retry a failed job"),
    (
        "cancel",
        "ID",
        "cancel a waiting job, or request the abort of a running one",
    ),
    (
        "job",
        "ID",
        "everything about one job: fields, history, errors",
    ),
    ("stats", "", "queue health and verdict"),
    (
        "failed",
        "[queue=Q] [task=T]",
        "recent failures with their last error",
    ),
    (
        "reset_stalled",
        "ID",
        "put a job stuck in doing back to todo",
    ),
    (
        "check",
        "[NAME]",
        "run one of the runbook's monitoring queries (list them without a name)",
    ),
    ("help", "[COMMAND]", "this list, or one command's usage"),
    ("exit", "", "leave the shell (also quit, or Ctrl-D)"),
];

#[derive(Debug, clap::Args)]
pub(crate) struct ShellArgs {
    /// Run this one command and exit (e.g. `list_jobs status=failed details`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub(crate) async fn run(url: Option<&str>, args: ShellArgs) -> Result<ExitCode, Failure> {
    let pool = jobs_pool(url).await?;
    if !args.command.is_empty() {
        let line = args.command.join(" ");
        return match execute(&pool, &line).await {
            Ok(Flow::Continue | Flow::Exit) => Ok(ExitCode::SUCCESS),
            Err(failure) => Err(failure),
        };
    }
    interactive(&pool).await
}

enum Flow {
    Continue,
    Exit,
}

async fn interactive(pool: &PgPool) -> Result<ExitCode, Failure> {
    let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::new()
        .map_err(|error| Failure::new(format!("failed to start the shell: {error}")))?;
    editor.set_helper(Some(ShellHelper));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    outln!("dawdle shell: type `help` for the commands, Tab completes, Ctrl-D leaves.");
    loop {
        let line = tokio::task::block_in_place(|| editor.readline("dawdle> "));
        let line = match line {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(error) => return Err(Failure::new(format!("failed to read a command: {error}"))),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        match execute(pool, &line).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => break,
            // A failed command is reported; the shell goes on.
            Err(failure) => eprintln!("{}", failure.message()),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(ExitCode::SUCCESS)
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .map(|home| std::path::PathBuf::from(home).join(".dawdle_shell_history"))
}

/// Parsed `key=value` filters and bare flags.
#[derive(Debug, Default)]
struct Arguments {
    filter: JobFilter,
    details: bool,
    positional: Vec<String>,
}

fn parse(words: &[&str]) -> Result<Arguments, String> {
    let mut arguments = Arguments::default();
    for word in words {
        match word.split_once('=') {
            Some(("id", value)) => {
                arguments.filter.id = Some(
                    value
                        .parse()
                        .map_err(|_| format!("id={}: not a job id", quote(value)))?,
                )
            }
            Some(("queue", value)) => arguments.filter.queue = Some(value.to_string()),
            Some(("task", value)) => arguments.filter.task = Some(value.to_string()),
            Some(("lock", value)) => arguments.filter.lock = Some(value.to_string()),
            Some(("queueing_lock", value)) => {
                arguments.filter.queueing_lock = Some(value.to_string())
            }
            Some(("status", value)) => {
                arguments.filter.status = Some(value.parse::<JobStatus>().map_err(|_| {
                    let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                    format!(
                        "status={}: expected one of {}",
                        quote(value),
                        known.join(", ")
                    )
                })?)
            }
            Some((key, _)) => {
                return Err(format!(
                    "unknown filter {}; filters are id, queue, task, status, lock, queueing_lock",
                    quote(key)
                ))
            }
            None if *word == "details" => arguments.details = true,
            None => arguments.positional.push(word.to_string()),
        }
    }
    Ok(arguments)
}

fn job_id(arguments: &Arguments, command: &str) -> Result<i64, Failure> {
    match arguments.positional.as_slice() {
        [id] => id
            .parse()
            .map_err(|_| usage(command, &format!("{} is not a job id", quote(id)))),
        _ => Err(usage(command, "expected one job id")),
    }
}

fn usage(command: &str, problem: &str) -> Failure {
    let message = match COMMANDS.iter().find(|(name, _, _)| *name == command) {
        Some((name, arguments, _)) => format!("{name}: {problem}\nusage: {name} {arguments}"),
        None => format!("{}: {problem}", quote(command)),
    };
    Failure {
        code: 2,
        ..Failure::new(message)
    }
}

async fn execute(pool: &PgPool, line: &str) -> Result<Flow, Failure> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&command, rest)) = words.split_first() else {
        return Ok(Flow::Continue);
    };
    let arguments = parse(rest).map_err(|problem| usage(command, &problem))?;
    match command {
        "list_jobs" => {
            let mut filter = arguments.filter.clone();
            filter.limit = Some(1000);
            let mut jobs = admin::job_listing(pool, &filter).await?;
            jobs.reverse();
            for listed in &jobs {
                let job = &listed.job;
                let mut line = format!(
                    "#{} {} on {} - [{}]",
                    job.id, job.task_name, job.queue_name, job.status
                );
                if arguments.details {
                    line.push_str(&format!(
                        " (attempts={}, priority={}, scheduled_at={}, args={}, lock={}, queueing_lock={})",
                        job.attempts,
                        job.priority,
                        crate::output::timestamp(job.scheduled_at),
                        listed.args_summary(),
                        job.lock.as_deref().unwrap_or("-"),
                        job.queueing_lock.as_deref().unwrap_or("-"),
                    ));
                }
                outln!("{}", shell_line(&line));
            }
        }
        "list_queues" | "list_tasks" | "list_locks" => {
            let grouping = match command {
                "list_queues" => Grouping::Queue,
                "list_tasks" => Grouping::Task,
                _ => Grouping::Lock,
            };
            for group in admin::group_counts(pool, grouping, &arguments.filter).await? {
                outln!(
                    "{}: {} jobs (todo: {}, doing: {}, succeeded: {}, failed: {}, cancelled: {}, aborted: {})",
                    shell_line(&group.name), group.jobs, group.todo, group.doing, group.succeeded, group.failed,
                    group.cancelled, group.aborted
                );
            }
        }
        "retry" => {
            let id = job_id(&arguments, command)?;
            admin::retry(pool, id).await?;
            print_one(pool, id).await?;
        }
        "cancel" => {
            let id = job_id(&arguments, command)?;
            admin::cancel(pool, id).await?;
            print_one(pool, id).await?;
        }
        "reset_stalled" => {
            let id = job_id(&arguments, command)?;
            admin::reset_stalled(pool, &admin::ResetTarget::Job(id), false).await?;
            print_one(pool, id).await?;
        }
        "job" => {
            let id = job_id(&arguments, command)?;
            ops::show_job(pool, id, false).await?;
        }
        "stats" => {
            let stats = admin::stats(pool, &admin::StatsConfig::default()).await?;
            ops::print_stats(&stats);
        }
        "failed" => {
            let filter = admin::FailedFilter {
                queue: arguments.filter.queue.clone(),
                task: arguments.filter.task.clone(),
                since: None,
                limit: Some(50),
            };
            for job in admin::failed_jobs(pool, &filter).await? {
                let line = format!(
                    "#{} {} on {} - {}: {}",
                    job.id,
                    job.task_name,
                    job.queue_name,
                    job.error.as_deref().unwrap_or("-"),
                    job.error_message.as_deref().unwrap_or("-")
                );
                outln!("{}", shell_line(&line));
            }
        }
        "check" => match arguments.positional.first() {
            None => {
                for check in admin::CHECKS {
                    outln!("{}: {}", check.name, check.description);
                }
            }
            Some(name) => {
                let result = admin::run_check(pool, name)
                    .await
                    .map_err(|error| ops::check_failure(name, error))?
                    .ok_or_else(|| usage(command, &format!("no check named {}", quote(name))))?;
                for row in &result.rows {
                    let cells: Vec<String> = result
                        .columns
                        .iter()
                        .map(|c| {
                            format!(
                                "{c}={}",
                                row.get(c).map_or("-".to_string(), |v| v.to_string())
                            )
                        })
                        .collect();
                    outln!("{}", shell_line(&cells.join(" ")));
                }
            }
        },
        "help" | "?" => match arguments.positional.first() {
            Some(name) => match COMMANDS.iter().find(|(n, _, _)| n == name) {
                Some((name, args, what)) => outln!("{name} {args}\n    {what}"),
                None => return Err(usage("help", &format!("no command {}", quote(name)))),
            },
            None => {
                for (name, args, what) in COMMANDS {
                    outln!("{name:<14} {what}");
                    if !args.is_empty() {
                        outln!("{:<14}   {name} {args}", "");
                    }
                }
            }
        },
        "exit" | "quit" => return Ok(Flow::Exit),
        other => {
            let names: Vec<&str> = COMMANDS.iter().map(|(n, _, _)| *n).collect();
            return Err(Failure {
                code: 2,
                ..Failure::new(format!(
                    "unknown command {}; commands: {}",
                    quote(other),
                    names.join(", ")
                ))
            });
        }
    }
    Ok(Flow::Continue)
}

async fn print_one(pool: &PgPool, id: i64) -> Result<(), Failure> {
    if let Some(job) = admin::get_job(pool, id).await? {
        let line = format!(
            "#{} {} on {} - [{}]",
            job.id, job.task_name, job.queue_name, job.status
        );
        outln!("{}", shell_line(&line));
    }
    Ok(())
}

/// Tab completion of command names, and of filter keys after a command.
struct ShellHelper;

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let word = &before[start..];
        let candidates: Vec<String> = if start == 0 {
            COMMANDS
                .iter()
                .map(|(name, _, _)| name.to_string())
                .collect()
        } else {
            [
                "id=",
                "queue=",
                "task=",
                "status=",
                "lock=",
                "queueing_lock=",
                "details",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(JobStatus::ALL.iter().map(|s| format!("status={s}")))
            .collect()
        };
        let matches = candidates
            .into_iter()
            .filter(|candidate| candidate.starts_with(word))
            .map(|candidate| Pair {
                display: candidate.clone(),
                replacement: candidate,
            })
            .collect();
        Ok((start, matches))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// Most characters of one line the shell prints about a row.
const MAX_SHELL_LINE_CHARS: usize = 2000;

/// A line about rows, made printable and bounded: its values come from rows
/// anyone may have written.
fn shell_line(line: &str) -> String {
    crate::output::field_text(line, MAX_SHELL_LINE_CHARS)
}
