// Reference outputs from llama.cpp for Gloss's fidelity tests. Links against libllama.
//   llama_ref MODEL PROMPT_FILE N_GEN > golden.json
// Tokenizes the prompt as `gloss run --raw` does (BOS if the model adds one, specials
// parsed), generates greedily, and records per step the top-2 margin; then re-runs
// prompt+continuation in one batch (teacher forcing) and records each position's argmax,
// margin, and the first step's top logits.
#include "llama.h"
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static void top2(const float *l, int n, int &best, float &margin) {
    int a = 0, b = -1;
    for (int i = 1; i < n; i++) {
        if (l[i] > l[a]) { b = a; a = i; }
        else if (b < 0 || l[i] > l[b]) { b = i; }
    }
    best = a; margin = l[a] - l[b];
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: llama_ref MODEL PROMPT_FILE N_GEN\n"); return 2; }
    std::ifstream f(argv[2]); std::stringstream ss; ss << f.rdbuf(); std::string prompt = ss.str();
    int n_gen = atoi(argv[3]);
    llama_backend_init();
    auto mp = llama_model_default_params(); mp.n_gpu_layers = 0;
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    const llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    auto cp = llama_context_default_params(); cp.n_ctx = 1024; cp.n_batch = 1024; cp.n_threads = 2;
    std::vector<llama_token> toks(prompt.size() + 8);
    int n = llama_tokenize(vocab, prompt.c_str(), prompt.size(), toks.data(), toks.size(), true, true);
    toks.resize(n);
    // Greedy generation.
    llama_context *ctx = llama_init_from_model(model, cp);
    std::vector<llama_token> gen; std::vector<float> gen_margin;
    llama_batch batch = llama_batch_get_one(toks.data(), toks.size());
    for (int i = 0; i < n_gen; i++) {
        if (llama_decode(ctx, batch)) { fprintf(stderr, "decode failed\n"); return 1; }
        const float *l = llama_get_logits_ith(ctx, -1);
        int best; float m; top2(l, n_vocab, best, m);
        if (llama_vocab_is_eog(vocab, best)) break;
        gen.push_back(best); gen_margin.push_back(m);
        batch = llama_batch_get_one(&gen.back(), 1);
    }
    llama_free(ctx);
    // Teacher forcing over prompt + continuation.
    ctx = llama_init_from_model(model, cp);
    std::vector<llama_token> all = toks; all.insert(all.end(), gen.begin(), gen.end());
    llama_batch b = llama_batch_init(all.size(), 0, 1);
    for (size_t i = 0; i < all.size(); i++) {
        b.token[i] = all[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
    }
    b.n_tokens = all.size();
    if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
    printf("{\n  \"prompt_ids\": [");
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", toks[i]);
    printf("],\n  \"generated_ids\": [");
    for (size_t i = 0; i < gen.size(); i++) printf("%s%d", i ? ", " : "", gen[i]);
    printf("],\n  \"generated_margins\": [");
    for (size_t i = 0; i < gen.size(); i++) printf("%s%.4f", i ? ", " : "", gen_margin[i]);
    printf("],\n  \"forced_argmax\": [");
    for (size_t i = 0; i < all.size(); i++) { int best; float m; top2(llama_get_logits_ith(ctx, i), n_vocab, best, m); printf("%s%d", i ? ", " : "", best); }
    printf("],\n  \"forced_margins\": [");
    for (size_t i = 0; i < all.size(); i++) { int best; float m; top2(llama_get_logits_ith(ctx, i), n_vocab, best, m); printf("%s%.4f", i ? ", " : "", m); }
    // First generation step's 64 largest logits.
    const float *l = llama_get_logits_ith(ctx, n - 1);
    std::vector<int> idx(n_vocab); for (int i = 0; i < n_vocab; i++) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + 64, idx.end(), [&](int a, int c) { return l[a] > l[c]; });
    printf("],\n  \"first_step_top\": [");
    for (int i = 0; i < 64; i++) printf("%s[%d, %.5f]", i ? ", " : "", idx[i], l[idx[i]]);
    printf("]\n}\n");
    llama_batch_free(b); llama_free(ctx); llama_model_free(model);
    return 0;
}
