"""Convert pytorch-fid's ported FID Inception weights (a local `pt_inception-2015-12-05-*.pth`) for
`ppflux_lightning.eval.fid_inception`: a `.pdparams` or `.safetensors` file. Nothing is downloaded.

    python tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth weights/fid_inception.safetensors
    python tools/eval.py score ... --features fid-inception:weights/fid_inception.safetensors

Needs PyTorch (the .pth file is a torch pickle, read with `weights_only=True`); the converted file does not.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.utils.errors import CheckpointError, UserError  # noqa: E402

SUFFIXES = (".pdparams", ".safetensors")


def read_torch_state(path):
    """The `.pth` state dict as float32 numpy arrays (torch imported here only, and a clear error without it)."""
    try:
        import torch
    except ImportError:
        raise UserError("reading a .pth file needs PyTorch, which is not installed: pip install torch "
                         "(only this converter needs it)") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID Inception .pth file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or non-torch file: name it, keep the message one line
        raise CheckpointError(f"{path} is not a readable PyTorch state dict: {type(err).__name__}: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v.detach().float().numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def convert(src, dst):
    """Read, rename, check against the network and write `dst` (.pdparams or .safetensors, atomically)."""
    from ppflux_lightning.eval import fid_inception

    if not dst.endswith(SUFFIXES):
        raise UserError(f"output must end in .pdparams or .safetensors, got {dst!r}")
    state = fid_inception.from_torch_names(read_torch_state(src))
    fid_inception.check_state(state, src)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if dst.endswith(".safetensors"):
        from ppflux_lightning.utils.safetensors_io import save_file

        save_file(state, dst, metadata={"source": os.path.basename(src)})
    else:
        import paddle

        from ppflux_lightning.utils.atomic import atomic_file

        with atomic_file(dst) as tmp:
            paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, tmp)
    return len(state)


def _main(argv):
    parser = cli.parser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="pt_inception-2015-12-05-*.pth (pytorch-fid's FID weights)")
    parser.add_argument("dst", help="output .pdparams or .safetensors file")
    args = parser.parse_args(argv)
    cli.existing_file("src", args.src)
    cli.output_file("dst", args.dst, SUFFIXES, protect=[args.src])
    count = convert(args.src, args.dst)
    print(f"wrote {count} tensors to {args.dst}")


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
