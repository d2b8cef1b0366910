"""The forum user's own model, made the way they made it: a plain nn.Sequential 4-64-64-4 tanh trained with Adam
on values only, inputs and outputs scaled to [0, 1] with a Max/Min CSV. No jacbench code trains it.

    python results/fit_example/user_model.py DIR    # writes DIR/trained_model.pth, max_min.csv, samples.csv
"""

import sys
from pathlib import Path

import pandas as pd
import torch
from torch import nn

import equations
from equations.sampling import sample_inputs

out = Path(sys.argv[1] if len(sys.argv) > 1 else "fit_example")
out.mkdir(parents=True, exist_ok=True)
eq = equations.get("forum4x4")
x = sample_inputs(eq, 512, "lhs", seed=0)
y = eq(x)
x_max, x_min, y_max, y_min = x.amax(0), x.amin(0), y.amax(0), y.amin(0)
rows = [*zip(x_max.tolist(), x_min.tolist(), strict=True), *zip(y_max.tolist(), y_min.tolist(), strict=True)]
pd.DataFrame(rows, columns=["Max", "Min"]).to_csv(out / "max_min.csv", index=False)
pd.DataFrame(torch.cat([x, y], 1).numpy(), columns=[*eq.input_names, *eq.output_names]).to_csv(
    out / "samples.csv", index=False
)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))
xn = ((x - x_min) / (x_max - x_min)).float()
yn = ((y - y_min) / (y_max - y_min)).float()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(3000):
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(xn), yn)
    loss.backward()
    opt.step()
torch.save(model.state_dict(), out / "trained_model.pth")
print(f"wrote {out}/trained_model.pth (train MSE {loss.item():.2e}), {out}/max_min.csv and {out}/samples.csv")
