import numpy as np

from ops.train.content import content_vectors, item_tokens


def test_tokens_cover_categories_title_words_and_decade():
    tokens = item_tokens("The Big Heat (1953)", ["Crime", "Film-Noir"], -504_921_600)  # 1954-01-01
    assert tokens == {"c:crime", "c:film-noir", "t:the", "t:big", "t:heat", "d:1950"}


def test_similar_metadata_gives_similar_vectors():
    genres = [["Drama"], ["Comedy"], ["Horror"], ["Family", "Animation"]]
    titles, categories, created = [], [], []
    for g in range(4):
        for k in range(25):
            titles.append(f"{genres[g][0]} title {k} (19{60 + k % 40})")
            categories.append(genres[g])
            created.append(0 + 86_400 * 365 * (k % 40))
    v = content_vectors(titles, categories, created, dim=8)
    assert v.shape == (100, 8) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    sim = v @ v.T
    group = np.arange(100) // 25
    same = sim[group[:, None] == group[None, :]].mean()
    other = sim[group[:, None] != group[None, :]].mean()
    assert same > other + 0.5
    assert np.array_equal(v, content_vectors(titles, categories, created, dim=8))


def test_item_without_tokens_gets_zero_vector():
    v = content_vectors(["", "Heat (1995)", "Alien (1979)"], [[], ["Crime"], ["Horror"]], [None, 0, 0], dim=4)
    assert not v[0].any() and np.isfinite(v).all() and v[1].any()
