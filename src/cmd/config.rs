//! `cnflow config`: print the effective configuration of every component.
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {}

pub fn main(_args: ConfigArgs) -> Result<()> {
    let agent = crate::config::AgentConfig::from_env()?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "agent": agent }))?);
    Ok(())
}
