import TandemCore
import TandemData
import TandemNN

/// What a process does in an asynchronous strategy (TensorFlow's `ParameterServerStrategy`). Either way it runs the
/// one training loop, `Trainer.fit`; the role says where an epoch's steps come from.
public enum AsynchronousRole {
    /// A worker computes its steps; each step's update goes out and the next step's parameters come back.
    case worker(AsynchronousUpdate)
    /// The chief computes no steps: its epochs are the workers' pushes, and after each it holds the parameters and
    /// optimizer state they reached — for the same evaluation, progress line, metrics and checkpoint as any epoch.
    case coordinator(AsynchronousCoordinator)
}

/// How a worker of an asynchronous strategy turns a step's gradients into the parameters of its next step: it
/// sends them to whoever applies them (the parameter servers) and receives the parameters to go on from — in place
/// of the synchronous replicas' all-reduce and local optimizer.
public protocol AsynchronousUpdate: AnyObject {
    /// Workers in the job, and this one's index: its rows are slice `workerIndex` of every `workerCount` batches.
    var workerCount: Int { get }
    var workerIndex: Int { get }

    /// Joins the job (agreeing with it on `model` and `data`) and receives the parameters to start from into the
    /// model's parameters. Returns false when the job has already ended.
    func start(model: Sequential, data: DataSource) throws -> Bool

    /// Sends one step's gradients (the first `model.parameterCount` floats of `gradients`, already scaled by the
    /// step's rows) and loss statistics, and receives the parameters of the next step into `parameters`. Returns
    /// false when the job has ended: the worker stops.
    func exchange(gradients: FlatArena, statistics: LossStatistics, parameters: FlatArena) throws -> Bool
}

/// One epoch of an asynchronous job as its chief saw it.
public struct AsynchronousEpoch: Sendable {
    /// The loss statistics the workers pushed with their gradients.
    public var train: LossStatistics
    /// Pushes counted by the epoch's end, over every worker (they overshoot an epoch's steps by what arrived
    /// while the chief looked).
    public var pushes: Int
    /// From the previous epoch's end (or the job's opening) to this one's.
    public var seconds: Double

    public init(train: LossStatistics, pushes: Int, seconds: Double) {
        self.train = train
        self.pushes = pushes
        self.seconds = seconds
    }
}

/// The chief's side of an asynchronous job: it opens the job from the chief's model and optimizer (a resumed
/// checkpoint's included), waits for each epoch's worth of pushes, and brings back the state the workers reached.
public protocol AsynchronousCoordinator: AnyObject {
    /// Opens the job: whoever applies the gradients starts from `model`'s parameters and `optimizer`'s state after
    /// `completedEpochs` epochs of `stepsPerEpoch` pushes; workers that agree on `model` and `data` are let in.
    func open(model: Sequential, optimizer: Optimizer, data: DataSource, completedEpochs: Int, stepsPerEpoch: Int) throws

    /// Waits until the workers have pushed the steps of epoch `epoch` (0-based; the job has `epochs`), then
    /// receives the parameters and optimizer state they reached into `model` and `optimizer`. After the last
    /// epoch the job is ended first, so these are the parameters it ends with.
    func awaitEpoch(_ epoch: Int, of epochs: Int, model: Sequential, optimizer: Optimizer) throws -> AsynchronousEpoch
}
