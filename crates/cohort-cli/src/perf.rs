//! `cohort perf`: placeholder replaced below.
use crate::CliResult;
use clap::Args;
/// Options of `cohort perf`.
#[derive(Args, Debug)]
pub(crate) struct PerfArgs {}
pub(crate) async fn run(_args: PerfArgs) -> CliResult {
    Ok(())
}
