"""PyTorch peer: the same dense and conv MNIST autoencoders as keras_ae.py.

python torch_ae.py --arch dense --epochs 15 --batch 256
python torch_ae.py --arch conv  --epochs 15 --batch 128
python torch_ae.py --arch conv --data rgb32.npz --channels-last   # other images, any shape
python torch_ae.py --arch dense --stream        # batches read from uint8 .npy files on disk
python torch_ae.py --arch dense --ensemble 8    # 8 members in one vmapped step

A copy of ../shared/bench/peers/torch_ae.py with four additions, each what aejax does too:
--depth and --width: the conv net scaled for larger images as aejax's --model depth=,width=
(the defaults, 2 and 30, are the tutorial's net);
--data: uint8 images [N, H, W, C] from an .npz holding "train" and "test" (what aejax trains
on from the same rows); the conv net's last layer then has C channels (Keras' example has 1).
--stream: the uint8 images are written to .npy files first (untimed) and every batch is read
from their memory maps and converted to float then (aejax --stream reads its decoded copy so).
--ensemble K: K members from seeds seed..seed+K-1, stacked with torch.func and run by one
vmapped forward/backward per batch; one Adam over the stacked parameters is K independent
Adams (it acts elementwise) on the sum of the members' losses; val_loss is the members' mean.
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--arch", choices=["dense", "conv"], required=True)
p.add_argument("--epochs", type=int, default=15)
p.add_argument("--batch", type=int, default=None, help="default: 256 dense, 128 conv")
p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch default")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--torch-init", action="store_true",
               help="keep PyTorch default init (default: Keras init, glorot_uniform weights + zero bias)")
p.add_argument("--channels-last", action="store_true", help="conv only: NHWC memory format (faster on CPU)")
p.add_argument("--data", help=".npz of uint8 [N, H, W, C] 'train' and 'test' (default: MNIST)")
p.add_argument("--stream", action="store_true", help="read each batch from uint8 .npy memory maps")
p.add_argument("--ensemble", type=int, default=1, help="K members in one vmapped step")
p.add_argument("--depth", type=int, default=2, help="conv: poolings by 2 (aejax --model depth)")
p.add_argument("--width", type=int, default=30, help="conv: channels (aejax --model width)")
a = p.parse_args()
batch = a.batch or (256 if a.arch == "dense" else 128)

if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

import numpy as np

if a.data:
    with np.load(a.data) as f:
        uint8 = [f[s] for s in ("train", "test")]  # [N, H, W, C]
else:
    from mnist_data import load_uint8
    uint8 = [x[..., None] for x, _ in load_uint8()]  # [N, 28, 28, 1]
if a.stream:  # on disk; batches come from the memory maps
    import atexit, shutil, tempfile
    folder = tempfile.mkdtemp(prefix="torch-peer-stream-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for name, x in zip(("train", "test"), uint8):
        np.save(f"{folder}/{name}.npy", x)
    uint8 = [np.load(f"{folder}/{name}.npy", mmap_mode="r") for name in ("train", "test")]
ch, pixels = uint8[0].shape[-1], int(np.prod(uint8[0].shape[1:]))


def to_model(x_u8):
    """uint8 [N, H, W, C] -> float32 in [0, 1], NCHW (conv) or flat (dense)."""
    x = torch.from_numpy(np.ascontiguousarray(x_u8)).float().div_(255.0)
    return x.reshape(len(x), -1) if a.arch == "dense" else x.permute(0, 3, 1, 2).contiguous()


if a.stream:
    x_train, x_val = uint8  # converted batch by batch
    take = lambda x, idx: to_model(x[np.sort(idx.numpy())])  # sorted: sequential page reads
else:
    x_train, x_val = (to_model(x) for x in uint8)
    take = lambda x, idx: x[idx]


def make_model():
    if a.arch == "dense":
        return nn.Sequential(nn.Linear(pixels, 15), nn.ReLU(), nn.Linear(15, pixels), nn.Sigmoid())
    c = lambda i, o: nn.Conv2d(i, o, 3, padding=1)  # == Keras padding="same" for 3x3
    pool = lambda: nn.MaxPool2d(2, ceil_mode=True)  # == Keras MaxPooling2D(2, padding="same")
    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # == Keras UpSampling2D(2)
    # aejax's conv (--depth, --width): the tutorial's net at depth 2, width 30, i.e.
    # c(ch, 30) relu pool c(30, 15) relu pool c(15, 15) relu up c(15, 30) relu up c(30, ch).
    down = [ch] + [a.width] * (a.depth - 1) + [15]
    up_channels = [15, *down[::-1][:-1]]
    layers = []
    for i, o in zip(down, down[1:]):
        layers += [c(i, o), nn.ReLU(), pool()]
    for i, o in zip(up_channels, up_channels[1:]):
        layers += [c(i, o), nn.ReLU(), up()]
    return nn.Sequential(*layers, c(up_channels[-1], ch), nn.Sigmoid())


def keras_init(model):
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)  # == Keras glorot_uniform (same fan_in/fan_out)
            nn.init.zeros_(m.bias)
    return model


members = []
for k in range(a.ensemble):
    torch.manual_seed(a.seed + k)
    members.append(make_model() if a.torch_init else keras_init(make_model()))
model = members[0]
cl = a.channels_last and a.arch == "conv"
if cl:
    model = model.to(memory_format=torch.channels_last)
fmt = (lambda t: t.contiguous(memory_format=torch.channels_last)) if cl else (lambda t: t)

loss_fn = nn.BCELoss()  # mean over all pixels, like Keras binary_crossentropy
if a.ensemble > 1:
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(members)  # each leaf [K, ...], requires grad
    skeleton = copy.deepcopy(model).to("meta")
    run_all = vmap(lambda p, b, x: functional_call(skeleton, (p, b), (x,)), in_dims=(0, 0, None))
    trained = list(params.values())

    def forward(xb):  # [K, B, ...]
        return run_all(params, buffers, xb)

    def batch_loss(xb):  # the sum of the members' mean BCE; reported as their mean
        out = forward(xb)
        per_member = nn.functional.binary_cross_entropy(
            out, xb.expand_as(out), reduction="none").flatten(1).mean(1)
        return per_member.sum(), per_member.mean()
else:
    trained = list(model.parameters())

    def batch_loss(xb):
        loss = loss_fn(model(xb), xb)
        return loss, loss

opt = torch.optim.Adam(trained, lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
n_params = sum(q.numel() for q in trained)
print(f"{a.arch}: {n_params} params, batch {batch}, threads {torch.get_num_threads()}", flush=True)

times, vals = [], []
for epoch in range(a.epochs):
    t0 = time.perf_counter()
    model.train()
    tot, n = 0.0, 0
    for idx in torch.randperm(len(x_train)).split(batch):  # last partial batch kept, like Keras
        xb = fmt(take(x_train, idx))
        loss, reported = batch_loss(xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += reported.item() * len(idx)
        n += len(idx)
    model.eval()
    with torch.inference_mode():
        val = sum(batch_loss(fmt(take(x_val, idx)))[1].item() * len(idx)
                  for idx in torch.arange(len(x_val)).split(batch)) / len(x_val)
    dt = time.perf_counter() - t0  # train + validation, as in the Keras epoch timer
    times.append(dt)
    vals.append(val)
    print(f"epoch {epoch + 1:2d}  {dt:7.2f} s  loss {tot / n:.4f}  val_loss {val:.4f}", flush=True)

print(json.dumps({
    "peer": "torch", "arch": a.arch, "epochs": a.epochs, "batch": batch,
    "sec_per_epoch_median": round(statistics.median(times), 3),
    "final_val_loss": round(vals[-1], 4), "first_epoch_val_loss": round(vals[0], 4),
    "threads": torch.get_num_threads(), "torch": torch.__version__,
    "init": "torch" if a.torch_init else "keras", "channels_last": cl,
    "train_images": len(x_train), "image_shape": list(uint8[0].shape[1:]),
    "stream": a.stream, "ensemble": a.ensemble, "depth": a.depth, "width": a.width,
}))
