"""PyTorch peer: the same dense and conv MNIST autoencoders as keras_ae.py.

python torch_ae.py --arch dense --epochs 15 --batch 256
python torch_ae.py --arch conv  --epochs 15 --batch 128
python torch_ae.py --arch conv --data rgb32.npz --channels-last   # other images, any shape

A copy of ../shared/bench/peers/torch_ae.py with one addition, --data: uint8 images
[N, H, W, C] from an .npz holding "train" and "test" (what aejax trains on from the same rows);
the conv net's last layer then has C channels (Keras' example has 1).
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn

from mnist_data import load_float

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
a = p.parse_args()
batch = a.batch or (256 if a.arch == "dense" else 128)

if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

if a.data:
    import numpy as np
    with np.load(a.data) as f:
        arrays = [f[s].astype(np.float32) / 255.0 for s in ("train", "test")]  # [N, H, W, C]
else:
    arrays = [x[..., None] for x in load_float()]  # float32 [0,1] = uint8/255, [N, 28, 28, 1]
x_train, x_val = (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous() for x in arrays)  # NCHW
ch, pixels = x_train.shape[1], x_train[0].numel()
if a.arch == "dense":
    x_train, x_val = x_train.reshape(len(x_train), -1), x_val.reshape(len(x_val), -1)
    model = nn.Sequential(nn.Linear(pixels, 15), nn.ReLU(), nn.Linear(15, pixels), nn.Sigmoid())
else:
    c = lambda i, o: nn.Conv2d(i, o, 3, padding=1)  # == Keras padding="same" for 3x3
    pool = lambda: nn.MaxPool2d(2, ceil_mode=True)  # == Keras MaxPooling2D(2, padding="same")
    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # == Keras UpSampling2D(2)
    model = nn.Sequential(c(ch, 30), nn.ReLU(), pool(), c(30, 15), nn.ReLU(), pool(),
                          c(15, 15), nn.ReLU(), up(), c(15, 30), nn.ReLU(), up(),
                          c(30, ch), nn.Sigmoid())

if not a.torch_init:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)  # == Keras glorot_uniform (same fan_in/fan_out)
            nn.init.zeros_(m.bias)

cl = a.channels_last and a.arch == "conv"
if cl:
    model = model.to(memory_format=torch.channels_last)
fmt = (lambda t: t.contiguous(memory_format=torch.channels_last)) if cl else (lambda t: t)

opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
loss_fn = nn.BCELoss()  # mean over all pixels, like Keras binary_crossentropy
n_params = sum(q.numel() for q in model.parameters())
print(f"{a.arch}: {n_params} params, batch {batch}, threads {torch.get_num_threads()}", flush=True)

times, vals = [], []
for epoch in range(a.epochs):
    t0 = time.perf_counter()
    model.train()
    tot, n = 0.0, 0
    for idx in torch.randperm(len(x_train)).split(batch):  # last partial batch kept, like Keras
        xb = fmt(x_train[idx])
        loss = loss_fn(model(xb), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += loss.item() * len(idx)
        n += len(idx)
    model.eval()
    with torch.inference_mode():
        val = sum(loss_fn(model(xb), xb).item() * len(xb)
                  for xb in fmt(x_val).split(batch)) / len(x_val)
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
    "train_images": len(x_train), "image_shape": list(arrays[0].shape[1:]),
}))
