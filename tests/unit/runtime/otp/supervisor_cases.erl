#!/usr/bin/env escript
%%! -noinput
%% The reference for tests/unit/runtime/test_otp_differential.py: runs supervision
%% cases through Erlang/OTP's own `supervisor` and prints, per case, the workers'
%% start/stop events in order and the final state. The Python test runs the same
%% cases (it writes them to the file given as the argument, as Erlang terms) through
%% ECHO's Supervisor and compares the two outputs line for line.
%%
%% A case: {Name, Strategy, MaxRestarts, Children, Actions}
%%   Children: [{Id, Restart, worker} | {Id, Restart, {supervisor, Strategy, MaxR, Children}}]
%%   Actions:  [{crash | normal | shutdown, Path}]   Path: child ids from the top
%% The period is an hour, so every restart of a case counts towards the intensity.
%%
%% Output, per case:
%%   case <name>
%%   start <id> | exit <id> <reason> | stop <id> <reason>   (workers, in order)
%%   final alive [<id>:running|undefined, ...] | final down <reason>
%%   ...then the events of stopping the top supervisor, if it was alive.
-module(supervisor_cases).
-mode(compile).
-export([main/1, init/1, start_worker/1, start_sup/3]).

main([File]) ->
    {ok, Cases} = file:consult(File),
    logger:set_primary_config(level, none),  % no supervisor reports on stdout
    process_flag(trap_exit, true),
    ets:new(events, [named_table, public, ordered_set]),
    lists:foreach(fun run/1, Cases),
    halt(0).

event(Format, Args) ->
    ets:insert(events, {erlang:unique_integer([monotonic]), lists:flatten(io_lib:format(Format, Args))}).

run({Name, Strategy, MaxR, Children, Actions}) ->
    ets:delete_all_objects(events),
    {ok, Top} = start_sup(Strategy, MaxR, Children),
    Ref = monitor(process, Top),
    lists:foreach(fun(Action) -> act(Top, Action) end, Actions),
    case is_process_alive(Top) of
        true ->
            event("final alive ~s", [state(Top)]),
            exit(Top, shutdown),
            receive {'DOWN', Ref, process, Top, _} -> ok end;
        false ->
            receive {'DOWN', Ref, process, Top, Reason} -> event("final down ~s", [reason(Reason)]) end
    end,
    receive {'EXIT', Top, _} -> ok after 0 -> ok end,
    io:format("case ~s~n", [Name]),
    [io:format("~s~n", [Line]) || {_, Line} <- ets:tab2list(events)],
    ok.

act(Top, {What, Path}) ->
    Sups = sups(Top, lists:droplast(Path)),
    Pid = child(lists:last(Sups), lists:last(Path)),
    Ref = monitor(process, Pid),
    Pid ! {do, What},
    receive {'DOWN', Ref, process, Pid, _} -> ok end,
    %% A barrier: each supervisor on the path, deepest first, has handled the exit.
    [catch supervisor:which_children(S) || S <- lists:reverse(Sups)],
    ok.

sups(Top, Ids) ->
    lists:reverse(lists:foldl(fun(Id, [Sup | _] = Acc) -> [child(Sup, Id) | Acc] end, [Top], Ids)).

child(Sup, Id) ->
    {Id, Pid, _, _} = lists:keyfind(Id, 1, supervisor:which_children(Sup)),
    Pid.

state(Sup) ->
    Rows = lists:sort([{atom_to_list(Id), running(Pid)} || {Id, Pid, _, _} <- supervisor:which_children(Sup)]),
    "[" ++ lists:join(",", [Id ++ ":" ++ S || {Id, S} <- Rows]) ++ "]".

running(Pid) when is_pid(Pid) -> "running";
running(_) -> "undefined".

reason(shutdown) -> "shutdown";
reason({shutdown, _}) -> "shutdown";
reason(normal) -> "normal";
reason(killed) -> "killed";
reason(_) -> "crash".

%% -- the supervisor callback and the workers ------------------------------------------

start_sup(Strategy, MaxR, Children) ->
    supervisor:start_link(?MODULE, {Strategy, MaxR, Children}).

init({Strategy, MaxR, Children}) ->
    {ok, {#{strategy => Strategy, intensity => MaxR, period => 3600},
          [spec(C) || C <- Children]}}.

spec({Id, Restart, worker}) ->
    #{id => Id, start => {?MODULE, start_worker, [Id]}, restart => Restart,
      shutdown => 5000, type => worker};
spec({Id, Restart, {supervisor, Strategy, MaxR, Children}}) ->
    #{id => Id, start => {?MODULE, start_sup, [Strategy, MaxR, Children]},
      restart => Restart, shutdown => infinity, type => supervisor}.

start_worker(Id) ->
    Pid = spawn_link(fun() -> process_flag(trap_exit, true), worker(Id) end),
    event("start ~s", [Id]),
    {ok, Pid}.

worker(Id) ->
    receive
        {do, What} ->
            event("exit ~s ~s", [Id, What]),
            exit(What);
        {'EXIT', _Parent, Reason} ->
            event("stop ~s ~s", [Id, reason(Reason)]),
            exit(Reason)
    end.
