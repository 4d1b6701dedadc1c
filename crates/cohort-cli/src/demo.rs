//! `cohort demo`: placeholder replaced below.
use crate::CliResult;
use clap::Args;
/// Options of `cohort demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {}
pub(crate) async fn run(_args: DemoArgs) -> CliResult {
    Ok(())
}
