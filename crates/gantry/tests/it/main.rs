//! Integration tests of the `gantry` binary: a real controller process, real
//! instances, real router processes, real SQLite and the real `minisign`.
//! One test binary for the crate, so linking stays fast.

mod harness;

mod artifacts;
mod audit;
mod auth;
mod canary;
mod cli;
mod config;
mod crash;
mod dashboard;
mod demo;
mod deploy;
mod drift;
mod edges;
mod fleet;
mod fleet_ssh;
mod fleet_view;
mod governance;
mod ha;
mod hooks;
mod host;
mod incidents;
mod isolation;
mod logs;
mod metrics;
mod migrations;
mod notes;
mod notify;
mod openapi;
mod output;
mod postgres;
mod query_rules;
mod releases;
mod resources;
mod rollout;
mod schedule;
mod upgrade;
