//! `--output table|json` for every command that reads: a table for people,
//! or the API's own answer type as JSON for scripts (stable: it is the
//! `gantry-api` type the controller sends, documented in the OpenAPI document).

use crate::term::outln;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for a person to read.
    Table,
    /// The API's answer, pretty-printed.
    Json,
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// How to print the answer.
    #[arg(long = "output", short = 'o', value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

impl Output {
    /// Prints `answer` as JSON, or calls `table` to print it for people.
    pub fn show<T: Serialize + ?Sized>(
        self,
        answer: &T,
        table: impl FnOnce(&T),
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Json => outln!("{}", serde_json::to_string_pretty(answer)?),
            Format::Table => table(answer),
        }
        Ok(())
    }

    pub fn is_json(self) -> bool {
        self.format == Format::Json
    }
}
