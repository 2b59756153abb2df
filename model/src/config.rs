//! The model's shape and hyper-parameters, stored as a Hugging Face `GPT2Config` `config.json`.

use serde::{Deserialize, Serialize};

/// GPT-2 hyper-parameters, with the same field names as HF's `GPT2Config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Context length (number of learned positions).
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Dropout on the residual branches (attention and MLP outputs).
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f64,
    /// Dropout on the embeddings.
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f64,
    /// Dropout on the attention probabilities. Stored for HF compatibility; the fused
    /// attention kernel never materialises the probabilities, so ferrochat does not apply it.
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Any other keys of the file (model_type, architectures, bos_token_id, ...), kept so a
    /// config read from HF is written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_pdrop() -> f64 {
    0.1
}
fn default_init_range() -> f64 {
    0.02
}

impl GptConfig {
    /// A config with GPT-2's defaults for everything but the shape.
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> GptConfig {
        let mut extra = serde_json::Map::new();
        extra.insert("model_type".into(), "gpt2".into());
        extra.insert(
            "architectures".into(),
            serde_json::json!(["GPT2LMHeadModel"]),
        );
        extra.insert("activation_function".into(), "gelu_new".into());
        extra.insert("n_inner".into(), serde_json::Value::Null);
        extra.insert("tie_word_embeddings".into(), true.into());
        extra.insert("scale_attn_weights".into(), true.into());
        GptConfig {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            layer_norm_epsilon: default_eps(),
            resid_pdrop: default_pdrop(),
            embd_pdrop: default_pdrop(),
            attn_pdrop: default_pdrop(),
            initializer_range: default_init_range(),
            extra,
        }
    }

    /// Checks what the architecture needs: non-zero sizes, the width divisible by the heads,
    /// the tanh GELU, a 4× MLP. The message says what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if let Some(act) = self
            .extra
            .get("activation_function")
            .and_then(|v| v.as_str())
        {
            if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
                return Err(format!("activation_function {act:?} is not supported (GPT-2 uses the tanh GELU, \"gelu_new\")"));
            }
        }
        if let Some(inner) = self.extra.get("n_inner").and_then(|v| v.as_u64()) {
            if inner as usize != 4 * self.n_embd {
                return Err(format!(
                    "n_inner {inner} is not supported (only 4 * n_embd)"
                ));
            }
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return Err(format!(
                "layer_norm_epsilon {} must be positive",
                self.layer_norm_epsilon
            ));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of parameters (the unembedding is tied to the token embedding).
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        let block = 2 * c
            + (c * 3 * c + 3 * c)
            + (c * c + c)
            + 2 * c
            + (c * 4 * c + 4 * c)
            + (4 * c * c + c);
        self.vocab_size * c + self.n_positions * c + self.n_layer * block + 2 * c
    }
}
