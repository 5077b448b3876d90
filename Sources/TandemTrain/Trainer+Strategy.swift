import TandemCollectives
import TandemCore
import TandemNN

/// How a job starts beyond its config: where its parameters come from and how its gradients travel.
public struct TrainingStart: Sendable {
    /// A model of the job's layers to start from (a model built in code), instead of the config's seed.
    public var model: UncheckedSendable<Sequential>?
    /// A checkpoint to continue from: parameters, optimizer state and completed epochs.
    public var checkpoint: String?
    /// All-reduce gradients in buckets of at least this many floats while backward runs (nil: one fused sum).
    public var gradientBucketFloats: Int?

    public init(model: Sequential? = nil, checkpoint: String? = nil, gradientBucketFloats: Int? = nil) {
        self.model = model.map(UncheckedSendable.init)
        self.checkpoint = checkpoint
        self.gradientBucketFloats = gradientBucketFloats
    }
}

extension Trainer {
    /// Trains `config`'s job on `data` under `strategy`: one `Trainer` per replica of this process, agreeing on
    /// set-up, synchronized before step 1 (in an asynchronous job: joined to it, or opening it on the chief), then the
    /// one training loop. What `tandem train` and `Sequential.fit` both run. `announce` is called on replica 0 before step 1 (with whether it resumed), for a first line.
    /// Returns replica 0's summary and trainer.
    public static func run(_ config: JobConfig, on data: DataSource, strategy: any Strategy, start: TrainingStart = TrainingStart(),
                           options: TrainingOptions = TrainingOptions(),
                           announce: (@Sendable (_ trainer: Trainer, _ resumedFrom: String?) -> Void)? = nil) throws
        -> (summary: TrainingSummary, trainer: UncheckedSendable<Trainer>) {
        let asynchronous = try strategy.makeAsynchronousRole().map(UncheckedSendable.init)
        return try strategy.run { communicator in
            let trainer = try communicator.agreeOnOutcome {
                let trainer = try Trainer(config: config, data: data, communicator: communicator, startingFrom: start.model?.value,
                                          asynchronous: asynchronous?.value)
                if let checkpoint = start.checkpoint { try trainer.restore(from: checkpoint) }
                if let floats = start.gradientBucketFloats { trainer.gradientBucketFloats = floats }
                return trainer
            }
            try trainer.synchronizeReplicas()
            if communicator.rank == 0 { announce?(trainer, start.checkpoint) }
            return (try trainer.fit(options: options), UncheckedSendable(trainer))
        }
    }
}
