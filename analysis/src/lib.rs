//! attnscope-analysis: selection methods, metrics, the simulation runner, run bundles and the
//! `attnscope` command-line tool.
