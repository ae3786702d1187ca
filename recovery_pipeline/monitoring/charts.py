"""Charts for the analyst, rendered to PNG (matplotlib, Agg backend) and embedded as markdown."""

from __future__ import annotations

import base64
import io

import pandas as pd


def recovery_chart_png(kpis: pd.DataFrame, max_currencies: int = 4) -> bytes:
    """Recovery rate and failed-recovery rate by month (left), recovered amount by month for the
    largest currencies (right). ``kpis`` has the columns of ``monitoring.recovery_kpis``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    overall = kpis[kpis["currency"] == "all"].sort_values("month")
    per_ccy = kpis[kpis["currency"] != "all"]
    top = (per_ccy.groupby("currency")["recovered_amount_minor"].sum()
           .sort_values(ascending=False).head(max_currencies).index.tolist())
    fig = Figure(figsize=(10, 3.6), dpi=90)
    ax1, ax2 = fig.subplots(1, 2)
    months = overall["month"].tolist()
    x = range(len(months))
    ax1.bar([i - 0.2 for i in x], overall["recovery_rate"].fillna(0) * 100, width=0.4,
            label="recovered", color="#2e7d32")
    ax1.bar([i + 0.2 for i in x], overall["failed_recovery_rate"].fillna(0) * 100, width=0.4,
            label="unrecovered", color="#c62828")
    ax1.set_xticks(list(x), months, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("% of invoices with a failed payment")
    ax1.set_title("Recovery rate by month")
    ax1.legend(fontsize=8)
    for ccy in top:
        s = per_ccy[per_ccy["currency"] == ccy].set_index("month")["recovered_amount_minor"]
        ax2.plot(months, [float(s.get(mo, 0) or 0) / 100 for mo in months], marker="o", label=ccy)
    ax2.set_title("Recovered amount by month (major units)")
    ax2.tick_params(axis="x", labelrotation=45, labelsize=8)
    if top:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
