import TandemCore
import TandemData
import TandemNN

/// How a worker of an asynchronous strategy (TensorFlow's `ParameterServerStrategy`) turns a step's gradients into
/// the parameters of its next step: it sends them to whoever applies them (the parameter servers) and receives the
/// parameters to go on from — in place of the synchronous replicas' all-reduce and local optimizer. The training
/// loop is the same `Trainer.fit`; a strategy that has one gives it to each worker's `Trainer`.
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
