"""Deterministic synthetic financial statements in the research notebook's dataset schema.

    {company_id: {fiscal_year: {"description": statement text, "label": "increase" | "decrease"}}}

company_id: "C01".."C20"; fiscal_year: "2022", "2023" (strings, as JSON keys are).
description: the company's balance sheet and income statement for that year next to the
prior year, in USD millions. label: whether net income of the FOLLOWING fiscal year (which the
statement does not show) is higher ("increase") or lower ("decrease") than this year's.

The numbers come from a small simulation per company (revenue growth, gross margin, operating
costs, debt) drawn with random.Random(seed), so the file is the same on every machine and
Python version. Regenerate with:
    /usr/bin/python3 -m attnscope.sample_data --out config/sample_data/financial_statements.json
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Dict

SEED = 20240607
FIRST_YEAR = 2021        # simulated; shown as the prior year of 2022
LABELED_YEARS = (2022, 2023)
NAMES = [
    ("Northwind Components", "industrial parts"), ("Bluewater Foods", "packaged foods"),
    ("Crestline Software", "enterprise software"), ("Harbor Freight Lines", "trucking and logistics"),
    ("Summit Medical Devices", "medical devices"), ("Redwood Apparel", "apparel retail"),
    ("Ironclad Steelworks", "steel production"), ("Meridian Pharmaceuticals", "generic drugs"),
    ("Pioneer Solar", "solar panels"), ("Granite Home Improvement", "home improvement retail"),
    ("Atlas Semiconductors", "semiconductors"), ("Evergreen Grocers", "grocery stores"),
    ("Falcon Aerospace", "aircraft components"), ("Lakeside Hotels", "hotels"),
    ("Quantum Networks", "telecommunications equipment"), ("Prairie Agricultural Supply", "farm equipment"),
    ("Silverline Cosmetics", "cosmetics"), ("Beacon Insurance Services", "insurance brokerage"),
    ("Cobalt Mining", "copper and cobalt mining"), ("Orchid Toys", "toys and games"),
]


def _simulate(rng: random.Random, years: int) -> list:
    """One company's yearly figures (USD millions); a trend in growth and margins that
    persists, plus noise, so the statement carries a signal about next year."""
    revenue = rng.uniform(200, 5000)
    growth_trend = rng.uniform(-0.08, 0.12)
    gross_margin = rng.uniform(0.22, 0.6)
    margin_trend = rng.uniform(-0.02, 0.02)
    opex_ratio = gross_margin - rng.uniform(0.04, 0.16)
    debt = revenue * rng.uniform(0.1, 0.8)
    cash = revenue * rng.uniform(0.05, 0.25)
    equity = revenue * rng.uniform(0.3, 0.9)
    figures = []
    for _ in range(years):
        growth = growth_trend + rng.gauss(0, 0.05)
        revenue *= 1 + growth
        gross_margin = min(0.75, max(0.1, gross_margin + margin_trend + rng.gauss(0, 0.01)))
        opex_ratio = min(gross_margin + 0.05, max(0.05, opex_ratio + rng.gauss(0, 0.01)))
        cost_of_sales = revenue * (1 - gross_margin)
        gross_profit = revenue - cost_of_sales
        operating_expenses = revenue * opex_ratio
        operating_income = gross_profit - operating_expenses
        debt = max(0.0, debt * (1 + rng.gauss(0, 0.08)))
        interest = debt * rng.uniform(0.03, 0.07)
        pretax = operating_income - interest
        tax = max(0.0, pretax * 0.21)
        net_income = pretax - tax
        cash = max(5.0, cash + net_income * rng.uniform(0.3, 0.7) + rng.gauss(0, revenue * 0.01))
        equity += net_income * 0.6
        receivables = revenue * rng.uniform(0.08, 0.16)
        inventories = cost_of_sales * rng.uniform(0.1, 0.25)
        ppe = revenue * rng.uniform(0.3, 0.6)
        current_assets = cash + receivables + inventories
        total_assets = current_assets + ppe
        payables = cost_of_sales * rng.uniform(0.08, 0.15)
        short_debt = debt * rng.uniform(0.1, 0.3)
        current_liabilities = payables + short_debt
        long_debt = debt - short_debt
        total_liabilities = total_assets - equity
        figures.append({
            "cash": cash, "receivables": receivables, "inventories": inventories,
            "current_assets": current_assets, "ppe": ppe, "total_assets": total_assets,
            "payables": payables, "short_debt": short_debt, "current_liabilities": current_liabilities,
            "long_debt": long_debt, "total_liabilities": total_liabilities, "equity": equity,
            "sales": revenue, "cost_of_sales": cost_of_sales, "gross_profit": gross_profit,
            "operating_expenses": operating_expenses, "operating_income": operating_income,
            "interest": interest, "pretax": pretax, "tax": tax, "net_income": net_income,
        })
    return figures


_BALANCE_LINES = [
    ("Cash and cash equivalents", "cash"), ("Accounts receivable", "receivables"),
    ("Inventories", "inventories"), ("Total current assets", "current_assets"),
    ("Property, plant and equipment, net", "ppe"), ("Total assets", "total_assets"),
    ("Accounts payable", "payables"), ("Short-term debt", "short_debt"),
    ("Total current liabilities", "current_liabilities"), ("Long-term debt", "long_debt"),
    ("Total liabilities", "total_liabilities"), ("Shareholders' equity", "equity"),
]
_INCOME_LINES = [
    ("Net sales", "sales"), ("Cost of sales", "cost_of_sales"), ("Gross profit", "gross_profit"),
    ("Operating expenses", "operating_expenses"), ("Operating income", "operating_income"),
    ("Interest expense", "interest"), ("Income before income taxes", "pretax"),
    ("Income tax expense", "tax"), ("Net income", "net_income"),
]


def _statement(name: str, industry: str, year: int, current: dict, prior: dict) -> str:
    lines = [f"{name} ({industry}). Fiscal year {year}, in USD millions ({year} vs {year - 1}).",
             "Balance sheet:"]
    lines += [f"- {label}: {current[key]:,.1f} vs {prior[key]:,.1f}" for label, key in _BALANCE_LINES]
    lines.append("Income statement:")
    lines += [f"- {label}: {current[key]:,.1f} vs {prior[key]:,.1f}" for label, key in _INCOME_LINES]
    return "\n".join(lines)


def generate(seed: int = SEED) -> Dict[str, Dict[str, dict]]:
    rng = random.Random(seed)
    dataset: Dict[str, Dict[str, dict]] = {}
    for index, (name, industry) in enumerate(NAMES):
        years = LABELED_YEARS[-1] - FIRST_YEAR + 2  # through the year after the last labelled one
        figures = _simulate(rng, years)
        by_year = {FIRST_YEAR + i: f for i, f in enumerate(figures)}
        company = {}
        for year in LABELED_YEARS:
            label = "increase" if by_year[year + 1]["net_income"] > by_year[year]["net_income"] else "decrease"
            company[str(year)] = {"description": _statement(name, industry, year, by_year[year], by_year[year - 1]),
                                  "label": label}
        dataset[f"C{index + 1:02d}"] = company
    return dataset


def dumps(dataset) -> str:
    return json.dumps(dataset, indent=2, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="where to write the JSON dataset")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(dumps(generate(args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
