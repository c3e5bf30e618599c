//! The one place that defines the columns of every bundle table: names, Arrow types and what each
//! column means. Writers build their record batches against [`schema`], readers check them
//! against it, and [`markdown`] prints the table the README shows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// The tables of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Metrics,
    Iou,
    Heads,
    Tokens,
    Maps,
    Selections,
    Eval,
}

impl Table {
    /// Every table, in file order.
    pub const ALL: [Table; 7] = [
        Table::Metrics,
        Table::Iou,
        Table::Heads,
        Table::Tokens,
        Table::Maps,
        Table::Selections,
        Table::Eval,
    ];

    /// The table's name (and file stem).
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// Looks a table up by name.
    pub fn from_name(name: &str) -> Option<Table> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's definition.
    pub fn def(self) -> &'static TableDef {
        match self {
            Table::Metrics => &METRICS,
            Table::Iou => &IOU,
            Table::Heads => &HEADS,
            Table::Tokens => &TOKENS,
            Table::Maps => &MAPS,
            Table::Selections => &SELECTIONS,
            Table::Eval => &EVAL,
        }
    }
}

/// Column types used by bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    U32,
    F64,
    Bool,
    Utf8,
    /// Nullable f64.
    OptF64,
    /// Nullable u32.
    OptU32,
    /// Nullable bool.
    OptBool,
    ListF32,
    ListU32,
}

impl Kind {
    /// The Arrow type and nullability.
    pub fn arrow(self) -> (DataType, bool) {
        let item = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
        match self {
            Kind::U32 => (DataType::UInt32, false),
            Kind::F64 => (DataType::Float64, false),
            Kind::Bool => (DataType::Boolean, false),
            Kind::Utf8 => (DataType::Utf8, false),
            Kind::OptF64 => (DataType::Float64, true),
            Kind::OptU32 => (DataType::UInt32, true),
            Kind::OptBool => (DataType::Boolean, true),
            Kind::ListF32 => (item(DataType::Float32), false),
            Kind::ListU32 => (item(DataType::UInt32), false),
        }
    }

    /// Short type name for documentation (what pyarrow prints).
    pub fn doc_name(self) -> &'static str {
        match self {
            Kind::U32 => "uint32",
            Kind::F64 => "double",
            Kind::Bool => "bool",
            Kind::Utf8 => "string",
            Kind::OptF64 => "double (null)",
            Kind::OptU32 => "uint32 (null)",
            Kind::OptBool => "bool (null)",
            Kind::ListF32 => "list<float>",
            Kind::ListU32 => "list<uint32>",
        }
    }
}

/// One column.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
}

/// One table: name, what one row is, columns.
#[derive(Debug)]
pub struct TableDef {
    pub name: &'static str,
    pub row: &'static str,
    pub columns: &'static [Column],
}

const fn c(name: &'static str, kind: Kind, doc: &'static str) -> Column {
    Column { name, kind, doc }
}

use Kind::*;

const INPUT: Column = c("input", U32, "input index (`manifest.data.inputs`)");
const LAYER: Column = c("layer", U32, "layer index");
const HEAD: Column = c("head", U32, "query head");
const KV_HEAD: Column = c("kv_head", U32, "KV head (GQA group) of the query head");
const BUDGET: Column = c("budget", U32, "budget index (`manifest.budgets`)");
const BUDGET_LABEL: Column = c("budget_label", Utf8, "e.g. `sparsity=0.9`");

/// `metrics`: one row per (input, layer, q-head, method, budget).
pub static METRICS: TableDef = TableDef {
    name: "metrics",
    row: "input x layer x q-head x method x budget",
    columns: &[
        c(
            "run",
            Utf8,
            "run id (`manifest.run_id`), for concatenating bundles",
        ),
        INPUT,
        LAYER,
        HEAD,
        KV_HEAD,
        c("method", Utf8, "method name (`attnscope methods`)"),
        c("params", Utf8, "the method's parameters as a JSON object"),
        BUDGET,
        BUDGET_LABEL,
        c("knob", F64, "calibrated value of the method's budget knob"),
        c("target_sparsity", F64, "sparsity asked for"),
        c(
            "sparsity",
            F64,
            "sparsity reached: 1 - kept visible pairs / all visible pairs (causal, inside a sliding window)",
        ),
        c(
            "recall",
            F64,
            "mean over queries of the attention mass kept",
        ),
        c("info_loss", F64, "1 - recall"),
        c("kl", F64, "mean KL(sparse || dense) = -ln R_i, nats"),
        c(
            "out_rel_err",
            F64,
            "mean relative L2 error of the attention output",
        ),
        c(
            "cosine",
            F64,
            "mean cosine of sparse vs dense attention output",
        ),
        c(
            "needle_recall",
            OptF64,
            "recall of the needle span by the question's queries (tasks only)",
        ),
        c(
            "reached",
            Bool,
            "calibration reached the target within tolerance",
        ),
        c(
            "recall_by_query_block",
            ListF32,
            "mean recall of each query block (`capture_block` queries)",
        ),
    ],
};

/// `iou`: one row per (input, layer, KV head, budget, method pair).
pub static IOU: TableDef = TableDef {
    name: "iou",
    row: "input x layer x KV head x budget x method pair (a before b in manifest order)",
    columns: &[
        INPUT,
        LAYER,
        KV_HEAD,
        BUDGET,
        BUDGET_LABEL,
        c("method_a", Utf8, "first method"),
        c("method_b", Utf8, "second method"),
        c(
            "iou",
            F64,
            "token-level IoU of the two selections, mean over the group's q-heads and queries",
        ),
    ],
};

/// `heads`: one row per (input, layer, q-head).
pub static HEADS: TableDef = TableDef {
    name: "heads",
    row: "input x layer x q-head",
    columns: &[
        INPUT,
        LAYER,
        HEAD,
        KV_HEAD,
        c(
            "sink_mass",
            F64,
            "mean attention mass on the first 4 tokens",
        ),
        c(
            "energy_share",
            ListF32,
            "share of q.k energy of each RoPE frequency chunk (index 0 = highest frequency)",
        ),
        c(
            "agreement",
            ListF32,
            "contextual agreement of each chunk's top-k keys with the full top-k",
        ),
    ],
};

/// `tokens`: one row per (input, position).
pub static TOKENS: TableDef = TableDef {
    name: "tokens",
    row: "input x token position",
    columns: &[
        INPUT,
        c("position", U32, "token position"),
        c("id", U32, "token id"),
        c("piece", Utf8, "decoded text of the token"),
        c(
            "is_punct",
            Bool,
            "punctuation token (PHSA's mask, newlines excluded)",
        ),
        c("is_newline", Bool, "newline-only token"),
        c(
            "char_start",
            OptU32,
            "first character (Unicode scalar) of the token in the input text",
        ),
        c("char_end", OptU32, "one past its last character"),
        c(
            "is_needle",
            Bool,
            "inside a target needle of a synthetic task",
        ),
        c(
            "is_needle_query",
            Bool,
            "a query of the task's question (scored by needle_recall)",
        ),
    ],
};

/// `maps`: one row per (input, layer, q-head).
pub static MAPS: TableDef = TableDef {
    name: "maps",
    row: "input x layer x q-head",
    columns: &[
        INPUT,
        LAYER,
        HEAD,
        c("block", U32, "tokens per block: the capture block, or the least multiple of it that leaves at most 256 blocks a side"),
        c("n_blocks", U32, "blocks per side"),
        c("map", ListF32, "pooled attention, n_blocks x n_blocks row-major: [query block, key block] = mean over the block's queries of the mass on the key block"),
    ],
};

/// `selections`: one row per (input, layer, q-head, method, saved budget, query block).
pub static SELECTIONS: TableDef = TableDef {
    name: "selections",
    row: "input x layer x q-head x method x saved budget x query block",
    columns: &[
        INPUT,
        LAYER,
        HEAD,
        KV_HEAD,
        c("method", Utf8, "method name"),
        BUDGET,
        BUDGET_LABEL,
        c(
            "query_block",
            U32,
            "query block index (`capture_block` queries)",
        ),
        c(
            "kept_blocks",
            ListU32,
            "key blocks the block's queries keep any key of, ascending",
        ),
        c(
            "kept_fraction",
            ListF32,
            "fraction of each kept block's causal (query, key) pairs kept",
        ),
    ],
};

/// `eval`: one row per (input, dense or method x budget) of `attnscope eval` (empty for
/// `simulate`). The terms are README's "End-to-end evaluation".
pub static EVAL: TableDef = TableDef {
    name: "eval",
    row: "input x (dense, then method x budget); `attnscope eval` only",
    columns: &[
        INPUT,
        c("method", Utf8, "method name, or `dense`"),
        c("budget", OptU32, "budget index (`manifest.budgets`); null for dense"),
        c("budget_label", Utf8, "e.g. `sparsity=0.9`; `dense` for dense"),
        c("tokens", U32, "tokens run (a task: prompt + reference answer)"),
        c("depth", OptF64, "depth of the task's first target needle, 0..1 (tasks only)"),
        c(
            "sparsity",
            F64,
            "sparsity reached over the sparse layers: 1 - kept visible pairs / all visible pairs",
        ),
        c("sparsity_by_layer", ListF32, "sparsity reached by each sparse layer, in layer order"),
        c("reached", Bool, "every layer's calibration reached the target within tolerance"),
        c("recall", OptF64, "mean attention mass kept over sparse layers, q-heads and queries"),
        c("out_rel_err", OptF64, "mean relative L2 error of the attention output"),
        c("cosine", OptF64, "mean cosine of sparse vs dense attention output"),
        c("scored", U32, "scored tokens: the last N (`--ppl-last`) or the answer's"),
        c("nll", F64, "mean next-token NLL of the scored tokens, nats"),
        c("ppl", F64, "perplexity exp(nll)"),
        c("delta_ppl", F64, "ppl - the dense row's ppl on the same input"),
        c(
            "kl",
            F64,
            "mean KL(sparse || dense) of the next-token distributions at the scored positions, nats",
        ),
        c("token_accuracy", F64, "share of scored tokens that are the argmax of their logits"),
        c(
            "exact_match",
            OptBool,
            "greedy decoding reproduces the whole reference answer (tasks only)",
        ),
    ],
};

/// The Arrow schema of a table (metadata names the table).
pub fn schema(t: Table) -> SchemaRef {
    let d = t.def();
    let fields: Vec<Field> = d
        .columns
        .iter()
        .map(|c| {
            let (ty, nullable) = c.kind.arrow();
            Field::new(c.name, ty, nullable)
        })
        .collect();
    let meta = HashMap::from([
        ("attnscope.table".to_string(), d.name.to_string()),
        (
            "attnscope.format_version".to_string(),
            super::FORMAT_VERSION.to_string(),
        ),
    ]);
    Arc::new(Schema::new_with_metadata(fields, meta))
}

/// The schema of every table as a Markdown table (README).
pub fn markdown() -> String {
    let mut s = String::from("| table | column | type | meaning |\n|---|---|---|---|\n");
    for t in Table::ALL {
        let d = t.def();
        for (i, c) in d.columns.iter().enumerate() {
            let first = if i == 0 {
                format!("`{}` ({})", d.name, d.row)
            } else {
                String::new()
            };
            s.push_str(&format!(
                "| {first} | `{}` | `{}` | {} |\n",
                c.name,
                c.kind.doc_name(),
                c.doc
            ));
        }
    }
    s
}
