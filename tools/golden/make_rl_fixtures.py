"""Fixtures for training/rl_formulas: every RLHF loss and advantage on fixed inputs, computed
independently of the C++ code from the published formulas with PyTorch in float64, the derivatives
by autograd. Writes tests/fixtures/rl/formulas.json (run from the repository root):

    /tmp/golden-venv/bin/python tools/golden/make_rl_fixtures.py
"""
import json
import math
import os

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261205)


def t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def kl_cases():
    out = []
    pairs = [(-1.3, -1.1), (-0.2, -2.5), (-4.0, -0.5), (-0.7, -0.7 + 1e-9), (-3.0, -3.0)]
    pairs += [tuple(rng.uniform(-6, 0, 2)) for _ in range(6)]
    for logp, ref in pairs:
        for name in ("k1", "k2", "k3"):
            lp = t(logp, True)
            l = lp - t(ref)
            if name == "k1":
                v = l
            elif name == "k2":
                v = l * l / 2
            else:
                v = torch.expm1(-l) + l  # exp(-l) - 1 + l, accurately
            v.backward()
            out.append({"estimator": name, "logp": logp, "ref_logp": ref,
                        "value": v.item(), "slope": lp.grad.item()})
    return out


def kl_controller_cases():
    # Ziegler et al. 2019: e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e n / horizon.
    out = []
    for beta0, target, horizon in ((0.05, 6.0, 10000.0), (0.1, 0.02, 512.0), (0.02, 0.0, 100.0)):
        beta, betas, updates = beta0, [], []
        for _ in range(6):
            kl, n = float(rng.uniform(0, 0.1 if target < 1 else 12)), int(rng.integers(1, 300))
            if target > 0:
                e = min(max(kl / target - 1, -0.2), 0.2)
                beta = beta * (1 + e * n / horizon)
            updates.append([kl, n])
            betas.append(beta)
        out.append({"beta": beta0, "target": target, "horizon": horizon, "updates": updates,
                    "betas": betas})
    return out


def gae_cases():
    out = []
    for n, gamma, lam in ((1, 1.0, 0.95), (5, 1.0, 1.0), (7, 0.99, 0.95), (12, 0.9, 0.0)):
        r = rng.normal(0, 1, n)
        v = rng.normal(0, 1, n)
        adv = np.zeros(n)
        last = 0.0
        for i in reversed(range(n)):
            next_v = v[i + 1] if i + 1 < n else 0.0
            delta = r[i] + gamma * next_v - v[i]
            last = delta + gamma * lam * last
            adv[i] = last
        out.append({"rewards": r.tolist(), "values": v.tolist(), "gamma": gamma, "lambda": lam,
                    "advantages": adv.tolist(), "returns": (adv + v).tolist()})
    return out


def whiten_cases():
    out = []
    for x in (rng.normal(3, 2, 9), np.array([1.5]), np.array([2.0, 2.0, 2.0]), rng.normal(0, 1e-3, 5)):
        xt = t(x.tolist())
        var = ((xt - xt.mean()) ** 2).mean()  # population variance
        w = (xt - xt.mean()) / torch.sqrt(var + 1e-8)
        out.append({"x": x.tolist(), "whitened": w.tolist()})
    return out


def group_cases():
    out = []
    for g, groups in ((4, 3), (8, 2), (2, 2)):
        r = rng.integers(0, 2, g * groups).astype(float)
        r[:g] = 1.0  # a group that all succeed: no spread, no advantage
        r = r + (rng.normal(0, 0.3, g * groups) if g == 8 else 0)
        rt = t(r.tolist()).reshape(groups, g)
        adv = (rt - rt.mean(1, keepdim=True)) / (rt.std(1, keepdim=True) + 1e-4)  # unbiased std
        out.append({"rewards": r.tolist(), "group_size": g, "advantages": adv.flatten().tolist()})
    return out


def token_weight_cases():
    out = []
    lengths = [3, 10, 1, 6, 0]
    max_length = 12
    n = len(lengths)
    for mode in ("sequence", "token", "constant"):
        # The loss is sum_i w_i sum_t l_it: recover w_i as the gradient of the normalised loss.
        ls = [t(np.ones(L).tolist(), True) for L in lengths]
        if mode == "sequence":
            loss = sum((x.mean() if len(x) else t(0.0)) for x in ls) / n
        elif mode == "token":
            loss = sum(x.sum() for x in ls) / sum(lengths)
        else:
            loss = sum(x.sum() for x in ls) / (n * max_length)
        loss.backward()
        weights = [x.grad[0].item() if len(x) else 0.0 for x in ls]
        out.append({"mode": mode, "lengths": lengths, "max_length": max_length,
                    "weights": weights})
    return out


def ppo_policy_cases():
    out = []
    for _ in range(24):
        logp = float(rng.uniform(-5, -0.1))
        old = logp + float(rng.choice([-0.5, -0.15, -0.05, 0.0, 0.05, 0.15, 0.5]))
        adv = float(rng.normal(0, 1.5))
        eps = float(rng.choice([0.1, 0.2, 0.28]))
        lp = t(logp, True)
        ratio = torch.exp(lp - t(old))
        l1 = -adv * ratio
        l2 = -adv * torch.clamp(ratio, 1 - eps, 1 + eps)
        loss = torch.max(l1, l2)
        loss.backward()
        out.append({"logp": logp, "old_logp": old, "advantage": adv, "eps": eps,
                    "loss": loss.item(), "slope": lp.grad.item(), "ratio": ratio.item(),
                    "clipped": bool(l2.item() > l1.item())})
    return out


def ppo_value_cases():
    out = []
    for _ in range(16):
        old = float(rng.normal(0, 1))
        value = old + float(rng.choice([-0.6, -0.1, 0.05, 0.3, 0.9]))
        ret = float(rng.normal(0, 1))
        eps = float(rng.choice([0.2, 0.5]))
        v = t(value, True)
        clipped_v = t(old) + torch.clamp(v - t(old), -eps, eps)
        a = (v - ret) ** 2
        b = (clipped_v - ret) ** 2
        loss = 0.5 * torch.max(a, b)
        loss.backward()
        out.append({"value": value, "old_value": old, "return": ret, "eps": eps,
                    "loss": loss.item(), "slope": v.grad.item(), "clipped": bool(b.item() > a.item())})
    return out


def preference_cases():
    out = []
    for _ in range(10):
        lw, ll, rw, rl = (float(x) for x in rng.uniform(-80, -5, 4))
        for kind, beta, smoothing in (("dpo", 0.1, 0.0), ("dpo", 0.5, 0.1), ("ipo", 0.1, 0.0),
                                      ("ipo", 1.0, 0.0)):
            w, l = t(lw, True), t(ll, True)
            h = (w - rw) - (l - rl)
            if kind == "dpo":
                z = beta * h
                loss = -(1 - smoothing) * torch.nn.functional.logsigmoid(z) \
                    - smoothing * torch.nn.functional.logsigmoid(-z)
            else:
                loss = (h - 1 / (2 * beta)) ** 2
            loss.backward()
            out.append({"kind": kind, "beta": beta, "label_smoothing": smoothing,
                        "logp_chosen": lw, "logp_rejected": ll, "ref_chosen": rw,
                        "ref_rejected": rl, "loss": loss.item(),
                        "slope_chosen": w.grad.item(), "slope_rejected": l.grad.item(),
                        "margin": beta * h.item()})
    return out


def bradley_terry_cases():
    out = []
    for _ in range(12):
        rw, rl = (float(x) for x in rng.normal(0, 4, 2))
        margin = float(rng.choice([0.0, 0.0, 1.0]))
        w, l = t(rw, True), t(rl, True)
        loss = -torch.nn.functional.logsigmoid(w - l - margin)
        loss.backward()
        out.append({"reward_chosen": rw, "reward_rejected": rl, "margin": margin,
                    "loss": loss.item(), "slope_chosen": w.grad.item(),
                    "slope_rejected": l.grad.item()})
    # Far apart: the loss must not overflow.
    for rw, rl in ((60.0, -60.0), (-60.0, 60.0)):
        w, l = t(rw, True), t(rl, True)
        loss = -torch.nn.functional.logsigmoid(w - l)
        loss.backward()
        out.append({"reward_chosen": rw, "reward_rejected": rl, "margin": 0.0,
                    "loss": loss.item(), "slope_chosen": w.grad.item(),
                    "slope_rejected": l.grad.item()})
    return out


def main():
    fixtures = {
        "generator": "tools/golden/make_rl_fixtures.py",
        "torch": torch.__version__,
        "kl": kl_cases(),
        "kl_controller": kl_controller_cases(),
        "gae": gae_cases(),
        "whiten": whiten_cases(),
        "group_advantages": group_cases(),
        "token_weights": token_weight_cases(),
        "ppo_policy": ppo_policy_cases(),
        "ppo_value": ppo_value_cases(),
        "preference": preference_cases(),
        "bradley_terry": bradley_terry_cases(),
    }
    path = os.path.join("tests", "fixtures", "rl", "formulas.json")
    with open(path, "w") as f:
        json.dump(fixtures, f, indent=1)
        f.write("\n")
    print("wrote", path, sum(len(v) for v in fixtures.values() if isinstance(v, list)), "cases")


if __name__ == "__main__":
    main()
