// Models the user can download, by their Hugging Face `resolve` URLs. Sizes are rounded,
// for the user to judge before downloading; the server's Content-Range is what counts.
import type { ModelEntry } from './protocol';

export const PACKED_MODEL: ModelEntry = {
  id: 'smollm2-135m-q4_1-packed',
  name: 'SmolLM2 135M Instruct (built in)',
  url: 'models/SmolLM2-135M-Instruct.Q4_1.gguf',
  family: 'llama',
  quant: 'Q4_1',
  size: 0,
  packed: true,
};

const HF = 'https://huggingface.co';
export const CATALOG: ModelEntry[] = [
  PACKED_MODEL,
  { id: 'smollm2-360m-q8_0', name: 'SmolLM2 360M Instruct', url: `${HF}/HuggingFaceTB/SmolLM2-360M-Instruct-GGUF/resolve/main/smollm2-360m-instruct-q8_0.gguf`, family: 'llama', quant: 'Q8_0', size: 386_000_000 },
  { id: 'smollm2-1.7b-q4_k_m', name: 'SmolLM2 1.7B Instruct', url: `${HF}/HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF/resolve/main/smollm2-1.7b-instruct-q4_k_m.gguf`, family: 'llama', quant: 'Q4_K_M', size: 1_056_000_000 },
  { id: 'qwen2.5-0.5b-q4_k_m', name: 'Qwen2.5 0.5B Instruct', url: `${HF}/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf`, family: 'qwen2', quant: 'Q4_K_M', size: 491_000_000 },
  { id: 'qwen2.5-1.5b-q4_k_m', name: 'Qwen2.5 1.5B Instruct', url: `${HF}/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/main/qwen2.5-1.5b-instruct-q4_k_m.gguf`, family: 'qwen2', quant: 'Q4_K_M', size: 1_117_000_000 },
  { id: 'llama3.2-1b-q4_k_m', name: 'Llama 3.2 1B Instruct', url: `${HF}/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q4_K_M.gguf`, family: 'llama', quant: 'Q4_K_M', size: 808_000_000 },
  { id: 'gemma3-270m-q4_k_m', name: 'Gemma 3 270M Instruct', url: `${HF}/unsloth/gemma-3-270m-it-GGUF/resolve/main/gemma-3-270m-it-Q4_K_M.gguf`, family: 'gemma3', quant: 'Q4_K_M', size: 253_000_000 },
  { id: 'gemma3-1b-q4_k_m', name: 'Gemma 3 1B Instruct', url: `${HF}/unsloth/gemma-3-1b-it-GGUF/resolve/main/gemma-3-1b-it-Q4_K_M.gguf`, family: 'gemma3', quant: 'Q4_K_M', size: 806_000_000 },
];
