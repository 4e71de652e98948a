"""Helpers shared by parity tests: build diffusers (PyTorch) FLUX modules and copy their weights into Paddle."""

import numpy as np
import paddle
import torch


def random_diffusers_transformer(config, seed=0, std=0.05):
    """A diffusers FluxTransformer2DModel with every parameter drawn N(0, std) (zero-init layers made non-zero)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


def copy_torch_into_paddle(torch_module, paddle_layer):
    """Copy a torch module's state dict into a Paddle layer with the same keys (2-D weights transposed)."""
    source = {k: v.detach().float().numpy() for k, v in torch_module.state_dict().items()}
    target = paddle_layer.state_dict()
    assert sorted(source) == sorted(target), (sorted(set(source) ^ set(target)))[:10]
    for key, param in target.items():
        array = source[key].T if source[key].ndim == 2 else source[key]
        param.set_value(paddle.to_tensor(np.ascontiguousarray(array)))


def image_ids(h, w):
    ids = np.zeros((h, w, 3), np.float32)
    ids[..., 1] = np.arange(h)[:, None]
    ids[..., 2] = np.arange(w)[None, :]
    return ids.reshape(-1, 3)


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() + 1e-12))


def diffusers_to_bfl_reference(sd, inner, guidance):
    """Independent re-statement of the BFL single-file layout (reference.md section 1), used to write test files.
    Input: diffusers keys -> numpy (torch layout). Written apart from the package's converter on purpose."""
    out = {}

    def put(bfl, diff):
        for suffix in (".weight", ".bias"):
            out[bfl + suffix] = sd[diff + suffix]

    def cat(bfl, diffs):
        for suffix in (".weight", ".bias"):
            out[bfl + suffix] = np.concatenate([sd[d + suffix] for d in diffs], 0)

    put("img_in", "x_embedder")
    put("txt_in", "context_embedder")
    put("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
    put("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
    put("vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
    put("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
    if guidance:
        put("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
        put("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
    n_double = len({k.split(".")[1] for k in sd if k.startswith("transformer_blocks.")})
    n_single = len({k.split(".")[1] for k in sd if k.startswith("single_transformer_blocks.")})
    for i in range(n_double):
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        put(f"{b}.img_mod.lin", f"{d}.norm1.linear")
        put(f"{b}.txt_mod.lin", f"{d}.norm1_context.linear")
        cat(f"{b}.img_attn.qkv", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"])
        cat(f"{b}.txt_attn.qkv", [f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"])
        out[f"{b}.img_attn.norm.query_norm.scale"] = sd[f"{d}.attn.norm_q.weight"]
        out[f"{b}.img_attn.norm.key_norm.scale"] = sd[f"{d}.attn.norm_k.weight"]
        out[f"{b}.txt_attn.norm.query_norm.scale"] = sd[f"{d}.attn.norm_added_q.weight"]
        out[f"{b}.txt_attn.norm.key_norm.scale"] = sd[f"{d}.attn.norm_added_k.weight"]
        put(f"{b}.img_attn.proj", f"{d}.attn.to_out.0")
        put(f"{b}.txt_attn.proj", f"{d}.attn.to_add_out")
        put(f"{b}.img_mlp.0", f"{d}.ff.net.0.proj")
        put(f"{b}.img_mlp.2", f"{d}.ff.net.2")
        put(f"{b}.txt_mlp.0", f"{d}.ff_context.net.0.proj")
        put(f"{b}.txt_mlp.2", f"{d}.ff_context.net.2")
    for i in range(n_single):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        cat(f"{b}.linear1", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"])
        put(f"{b}.linear2", f"{d}.proj_out")
        out[f"{b}.norm.query_norm.scale"] = sd[f"{d}.attn.norm_q.weight"]
        out[f"{b}.norm.key_norm.scale"] = sd[f"{d}.attn.norm_k.weight"]
        put(f"{b}.modulation.lin", f"{d}.norm.linear")
    for suffix in (".weight", ".bias"):
        scale, shift = np.split(sd["norm_out.linear" + suffix], 2, axis=0)
        out["final_layer.adaLN_modulation.1" + suffix] = np.concatenate([shift, scale], 0)
    put("final_layer.linear", "proj_out")
    assert inner == sd["x_embedder.weight"].shape[0]
    return out
