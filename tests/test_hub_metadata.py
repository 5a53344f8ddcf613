"""What the napari hub and PyPI show: licence, links, classifiers, citation, menu names."""

import re
import tomllib
from pathlib import Path

import yaml

import napari_tiled_unet

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_tiled_unet"


def test_pyproject_declares_licence_links_and_platforms():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "BSD-3-Clause"  # an SPDX expression (PEP 639)
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    # PEP 639: a licence expression replaces the licence classifiers.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert "Operating System :: OS Independent" in project["classifiers"]
    assert "Framework :: napari" in project["classifiers"]
    urls = project["urls"]
    assert {"Source", "Issues", "Documentation"} <= set(urls)
    assert all(u.startswith("https://github.com/napari-tiled-unet/") for u in urls.values())
    assert urls["Issues"].endswith("/issues")
    assert project["authors"] and "placeholder" not in str(project["authors"]).lower()


def test_citation_file_cites_the_package_and_the_u_net_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff)
    assert cff["version"] == napari_tiled_unet.__version__
    assert cff["license"] == "BSD-3-Clause"
    (paper,) = [r for r in cff["references"] if r.get("doi") == "10.1007/978-3-319-24574-4_28"]
    assert [a["family-names"] for a in paper["authors"]] == ["Ronneberger", "Fischer", "Brox"]
    assert paper["year"] == 2015 and "MICCAI" in paper["collection-title"]


def test_menu_names_in_the_docs_are_the_manifests():
    manifest = yaml.safe_load((PACKAGE / "napari.yaml").read_text())
    plugin = manifest["display_name"]
    menus = {
        "Open Sample": {s["display_name"] for s in manifest["contributions"]["sample_data"]},
        "Plugins": {w["display_name"] for w in manifest["contributions"]["widgets"]},
    }
    texts = [ROOT / "README.md", PACKAGE / "sample_data" / "README.md"]
    texts += sorted(PACKAGE.rglob("*.py"))
    found = []
    for path in texts:
        text = re.sub(r'"\s*\n\s*"', "", path.read_text())  # join Python string continuations
        text = " ".join(text.split())
        for menu, owner, rest in re.findall(r"(Open Sample|Plugins) ▸ ([^▸]+?) ▸ (.{0,60})", text):
            rest = rest.lstrip("*")
            named = [n for n in menus[menu] if rest.startswith(n)]
            # The name ends there: "*Nuclei (HeLa, real)*" must not pass as "Nuclei".
            whole = [n for n in named if not re.match(r"[\w (]", rest[len(n) : len(n) + 1])]
            found.append((path.name, menu, owner, rest))
            assert owner == plugin, (path.name, owner)
            assert whole, f"{path.name}: {menu} ▸ {owner} ▸ {rest!r}: not in {menus[menu]}"
    assert len(found) >= 5  # the README's sample and both widgets, the widgets' hints
