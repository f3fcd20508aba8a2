"""What are the features worth with 5, 10, ... 200 labels per class, and what does each space look like?

- :mod:`learning_curves.curves`: nested stratified draws of the training rows, every model fitted
  on the same draws and scored on the whole test split, the summary and its one sentence;
- :mod:`learning_curves.embeddings`: a seeded 2-D t-SNE of a feature space's test rows.

Nothing here reads params or writes files; the ``curves`` stage does both.
"""
