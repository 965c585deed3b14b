//! `cnflow gateway`: OTLP receiver → GeoIP → batch → export.
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {}

pub fn main(_args: GatewayArgs) -> Result<()> {
    anyhow::bail!("gateway is not built yet")
}
