"""openie retrievers as DSPy's demonstration selectors: kNN few-shot with BM25, dense or RUIE retrievers.

``dspy.KNN`` embeds a trainset with a ``dspy.Embedder`` and ``dspy.KNNFewShot`` sets the nearest
examples as each call's demonstrations. The same role here is played by any openie
``Retriever``, so a DSPy program gets exactly the demonstrations the seed methods get (the same
no-self-demonstration and same-task rules, the same BM25 ranking, the RUIE-distilled retriever).

Two differences from ``dspy.KNNFewShot``, on purpose: the retrieved records are used as labelled
demonstrations directly (DSPy's version bootstraps on them with LM calls for every query), and
the compiled program is a real module (:class:`KNNFewShotProgram`) whose state saves and loads
like any other; the retriever is saved with its own ``save``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy
from dspy.teleprompt.teleprompt import Teleprompter

from openie.agent.signatures import INPUT_FIELD, check_task, example_from_record
from openie.agent.tools import SHARED_MODELS
from openie.agent.trace import current_trace
from openie.records import Record
from retrievers.base import Retriever


class RetrieverKNN:
    """The ``k`` nearest pool records of an openie retriever, as ``dspy.Example`` demonstrations.

    ``task`` is the extraction task (which gold output the demonstrations show);
    ``retrieval_task`` filters a mixed-task pool (``meta["task"]``), as ``Retriever.retrieve`` does.
    """

    def __init__(self, retriever: Retriever, k: int, task: str = "ner", *, retrieval_task: str | None = None):
        if k < 1:
            raise ValueError(f"k must be >= 1 for kNN few-shot, got {k}")
        self.retriever, self.k, self.task, self.retrieval_task = retriever, k, check_task(task), retrieval_task

    def __deepcopy__(self, memo: dict[int, Any]) -> RetrieverKNN:
        return self  # the index is read-only: copies of a program share it

    def records(self, query: Record | str) -> list[Record]:
        """Pool records most similar to ``query``, most similar first (never the query itself)."""
        with SHARED_MODELS:
            return [r for r, _ in self.retriever.retrieve(query, self.k, task=self.retrieval_task)]

    def __call__(self, **inputs: Any) -> list[dspy.Example]:
        """Demonstrations for a call with these inputs (like ``dspy.KNN``): the query is the ``text`` input."""
        return [example_from_record(r, self.task) for r in self.records(str(inputs[INPUT_FIELD]))]

    def describe(self) -> dict[str, Any]:
        return {"retriever": repr(self.retriever), "k": self.k, "task": self.task, "retrieval_task": self.retrieval_task}


class KNNFewShotProgram(dspy.Module):
    """A program whose predictors see the retrieved demonstrations of each call's input.

    Demonstrations go on a copy of the program made per call (thread-safe under DSPy's parallel
    evaluation); the ids of the records shown land in the prediction (``demo_ids``) and in the
    current trace. Demonstrations compiled into the program before are replaced per call.
    """

    def __init__(self, program: dspy.Module, knn: RetrieverKNN):
        super().__init__()
        self.program = program
        self.knn = knn

    def forward(self, **inputs: Any) -> dspy.Prediction:
        records = self.knn.records(str(inputs[INPUT_FIELD]))
        demos = [example_from_record(r, self.knn.task) for r in records]
        ids = [r.id for r in records]
        trace = current_trace()
        if trace is not None:
            trace.demo_ids = ids
        program = self.program.deepcopy()
        for predictor in program.predictors():
            predictor.demos = list(demos)
        prediction = program(**inputs)
        prediction.demo_ids = ids
        return prediction


class RetrieverKNNFewShot(Teleprompter):
    """``dspy.KNNFewShot`` over an openie retriever: ``compile(student)`` gives a :class:`KNNFewShotProgram`.

    ``trainset`` (records) is indexed into the retriever when given; otherwise the retriever's
    own index is the pool.
    """

    def __init__(self, retriever: Retriever, k: int, task: str = "ner", *, retrieval_task: str | None = None):
        super().__init__()
        self.knn = RetrieverKNN(retriever, k, task, retrieval_task=retrieval_task)

    def compile(self, student: dspy.Module, *, trainset: Sequence[Record] | None = None,
                teacher: Any = None, valset: Any = None, **_: Any) -> KNNFewShotProgram:
        if trainset is not None:
            self.knn.retriever.index(list(trainset))
        return KNNFewShotProgram(student.deepcopy(), self.knn)


__all__ = ["KNNFewShotProgram", "RetrieverKNN", "RetrieverKNNFewShot"]
