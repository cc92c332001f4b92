"""Train the iris model exactly as inferbridge's examples do and save it with joblib.

Runs under a peer's own interpreter (its scikit-learn and numpy), so the pickle matches the
versions that load it. Same data, split, estimator and seed as
`inferbridge.examples.build.iris_classifier`. Usage: python train_iris.py OUT.joblib
"""

import sys

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

X, y = load_iris(return_X_y=True)
X_train, _, y_train, _ = train_test_split(
    X.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y
)
model = LogisticRegression(max_iter=1000, random_state=0).fit(X_train, y_train)
joblib.dump(model, sys.argv[1])
