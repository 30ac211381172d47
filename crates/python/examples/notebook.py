# Trials as DataFrames, a model trained and scored, from Python (run from the repository root).
import trialforge as tf

train = tf.read_trials("data/top/phase_I_train.csv")
valid = tf.read_trials("data/top/phase_I_valid.csv")
test = tf.read_trials("data/top/phase_I_test.csv")
print(train[["nctid", "label", "phase", "diseases", "drugs"]].head(3))

model = tf.Model("tfidf-lr", seed=0).fit(train, valid)
p = model.predict_proba(test)
scores = tf.score(test["label"], p, resamples=20, seed=0)
print(f"tfidf-lr, TOP phase I test: PR-AUC {scores['pr_auc']['mean']:.3f}, ROC-AUC {scores['roc_auc']['mean']:.3f}")
model.save("runs/python-tfidf-lr")  # the folder `trialforge predict --model` reads
