;;; gastownd-core.el --- gastownd: settings, towns, sockets, connections, text  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The gastownd authors

;; Author: The gastownd authors
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; What every part of gastownd uses: the settings and faces, the town and
;; its socket, asynchronous connections with timeouts, and the text of rows.
;; Part of the gastownd package: load it with (require 'gastownd).

;;; Code:

(require 'cl-lib)
(require 'parse-time)
(require 'subr-x)

(defgroup gastownd nil
  "Gas Town's event feed, sessions and attribution from gastownd."
  :group 'tools
  :prefix "gastownd-")

(defcustom gastownd-gastownctl-command '("gastownctl")
  "The gastownctl command, as a program and its first arguments.
It prints the daemon's socket path (`gastownctl sockname') and runs seances."
  :type '(repeat string))

(defcustom gastownd-socket nil
  "The daemon's socket path; nil to ask `gastownctl sockname'."
  :type '(choice (const :tag "Ask gastownctl" nil) file))

(defcustom gastownd-town-root nil
  "The town to use; nil for the town around the buffer's directory.
Outside any town, gastownctl decides: GT_TOWN_ROOT, GT_ROOT, then ~/gt."
  :type '(choice (const :tag "From the buffer" nil) directory))

(defcustom gastownd-timeout 3.0
  "Seconds after which a request to the daemon gives up."
  :type 'number)

(defcustom gastownd-feed-lines 500
  "Lines kept in the feed buffer; the oldest go first."
  :type 'natnum)

(defcustom gastownd-reconnect-min 0.25
  "Seconds before the feed's first reconnection attempt.
The delay doubles after each failed attempt, up to `gastownd-reconnect-max'."
  :type 'number)

(defcustom gastownd-reconnect-max 5.0
  "Longest delay, in seconds, between the feed's reconnection attempts."
  :type 'number)

(defcustom gastownd-sessions-limit 200
  "Rows fetched by `gastownd-sessions'."
  :type 'natnum)

(defcustom gastownd-mode-line-interval 5.0
  "Seconds between two refreshes of `gastownd-mode-line-mode'."
  :type 'number)

(defcustom gastownd-time-format "%H:%M:%S"
  "Local time format of feed rows (see `format-time-string')."
  :type 'string)

(defcustom gastownd-date-format "%Y-%m-%d %H:%M"
  "Local time format of session and attribution rows."
  :type 'string)

(defcustom gastownd-day-time-format "%m-%d %H:%M"
  "Local time format of feed rows from another day than today."
  :type 'string)

(defface gastownd-time '((t :inherit font-lock-comment-face))
  "Times in gastownd buffers.")

(defface gastownd-type '((t :inherit font-lock-type-face))
  "Event types, and the actions of the who buffer.")

(defface gastownd-actor '((t :inherit font-lock-variable-name-face))
  "Actors.")

(defface gastownd-node '((t :inherit font-lock-constant-face))
  "The node of another machine's event or session (actor@node).")

(defface gastownd-id '((t :inherit font-lock-constant-face))
  "Short session ids.")

(defface gastownd-status '((t :inherit font-lock-warning-face))
  "The feed's own `--' lines: the daemon went away, came back, a resync.")

(defface gastownd-state-open '((t :inherit font-lock-string-face))
  "The state of an open session.")

(defface gastownd-state-squashed '((t :inherit font-lock-keyword-face))
  "The state of a session ended and squashed into a digest.")

(defface gastownd-state-abandoned '((t :inherit font-lock-warning-face))
  "The state of an abandoned session.")

(defface gastownd-state-logged '((t :inherit font-lock-comment-face))
  "The state of a session known only from the log's lines.")

(defconst gastownd-protocol 1
  "The version of the gastownd protocol this package speaks.")

;;;; Messages

(defun gastownd--notify (format-string &rest args)
  "Tell the user, on one line, what FORMAT-STRING and ARGS say."
  (message "gastownd: %s" (apply #'format format-string args)))

(defun gastownd--describe (op err)
  "A one-line description of ERR, the failure of the request OP."
  (let ((code (or (plist-get err :code) "error"))
        (text (or (plist-get err :message) "no message")))
    (if (member code '("unavailable" "timeout" "gastownctl"))
        text
      (format "%s failed (%s): %s" op code text))))

(defmacro gastownd--safely (&rest body)
  "Run BODY; report an error on one line instead of letting it escape."
  (declare (indent 0) (debug t))
  `(condition-case err
       (progn ,@body)
     (error (gastownd--notify "internal error: %s"
                              (error-message-string err)))))

;;;; Towns and sockets

(defvar-local gastownd--buffer-town nil
  "The town a gastownd buffer was opened for: a directory, or `default'.")

(defun gastownd--find-root (dir)
  "The outermost ancestor of DIR holding mayor/town.json.
Else the outermost one holding a mayor/ directory, else nil (as gt decides)."
  (let ((dir (directory-file-name (expand-file-name dir)))
        with-marker with-mayor)
    (while dir
      (cond ((file-regular-p (expand-file-name "mayor/town.json" dir))
             (setq with-marker dir))
            ((file-directory-p (expand-file-name "mayor" dir))
             (setq with-mayor dir)))
      (let ((parent (directory-file-name (file-name-directory dir))))
        (setq dir (unless (equal parent dir) parent))))
    (or with-marker with-mayor)))

(defun gastownd--town-root ()
  "The current buffer's town, or nil for gastownctl's default."
  (cond (gastownd-town-root
         (directory-file-name (expand-file-name gastownd-town-root)))
        (gastownd--buffer-town
         (unless (eq gastownd--buffer-town 'default) gastownd--buffer-town))
        ((and default-directory (not (file-remote-p default-directory)))
         (gastownd--find-root default-directory))))

(defvar gastownd--sockets (make-hash-table :test #'equal)
  "Socket paths found so far, by town (\"\" for the default).")

(defvar gastownd--socket-waiters (make-hash-table :test #'equal)
  "Callbacks waiting for a running `gastownctl sockname', by town.")

(defun gastownd-forget-sockets ()
  "Forget the socket paths found so far.
Needed after changing `gastownd-gastownctl-command' or the environment."
  (interactive)
  (clrhash gastownd--sockets))

(defun gastownd--socket-found (key path err)
  "Give PATH (or ERR) to everything waiting for the socket of town KEY."
  (let ((callbacks (reverse (gethash key gastownd--socket-waiters))))
    (remhash key gastownd--socket-waiters)
    (when path (puthash key path gastownd--sockets))
    (dolist (callback callbacks)
      (gastownd--safely (funcall callback path err)))))

(defun gastownd--socket (root callback)
  "Call CALLBACK with the socket path of ROOT's daemon and nil.
Or with nil and an error plist, when gastownctl fails."
  (let* ((key (or root ""))
         (known (gethash key gastownd--sockets)))
    (cond (gastownd-socket
           (funcall callback (expand-file-name gastownd-socket) nil))
          (known (funcall callback known nil))
          ((gethash key gastownd--socket-waiters)
           (push callback (gethash key gastownd--socket-waiters)))
          (t (puthash key (list callback) gastownd--socket-waiters)
             (gastownd--run-sockname root key)))))

(defun gastownd--local-directory ()
  "A local directory that exists, for running processes from."
  (if (and default-directory (not (file-remote-p default-directory))
           (file-directory-p default-directory))
      default-directory
    (expand-file-name "~/")))

(defun gastownd--sockname-error (format-string &rest args)
  "An error plist of `gastownctl sockname', saying FORMAT-STRING with ARGS."
  (list :code "gastownctl" :message (apply #'format format-string args)))

(defun gastownd--run-sockname (root key)
  "Run `gastownctl sockname' for ROOT, asynchronously, for the waiters of KEY."
  (let* ((command (append gastownd-gastownctl-command
                          (when root (list "--town-root" root))
                          '("sockname")))
         (shown (string-join command " "))
         (output (generate-new-buffer " *gastownd-sockname*"))
         (default-directory (gastownd--local-directory))
         (done nil)
         timer process)
    (cl-flet ((finish (path err)
                (unless done
                  (setq done t)
                  (when timer (cancel-timer timer))
                  (when (and process (process-live-p process))
                    (delete-process process))
                  (when (buffer-live-p output) (kill-buffer output))
                  (gastownd--socket-found key path err))))
      (condition-case err
          (setq process
                (make-process
                 :name "gastownd-sockname" :buffer output
                 :command (cons (or (executable-find (car command))
                                    (error "%s: not found" (car command)))
                                (cdr command))
                 :connection-type 'pipe :noquery t
                 :sentinel
                 (lambda (proc _event)
                   (unless (process-live-p proc)
                     (let ((text (with-current-buffer output
                                   (string-trim (buffer-string))))
                           (status (process-exit-status proc)))
                       (if (and (eq (process-status proc) 'exit) (= status 0)
                                (not (string-empty-p text))
                                (not (string-search "\n" text)))
                           (finish text nil)
                         (finish nil (gastownd--sockname-error
                                      "`%s' failed (exit %s): %s" shown status
                                      (car (split-string text "\n"))))))))))
        (error
         (finish nil (gastownd--sockname-error
                      "cannot run `%s' (%s); set `gastownd-gastownctl-command'"
                      shown (error-message-string err)))))
      (unless done
        (setq timer
              (run-at-time gastownd-timeout nil
                           (lambda ()
                             (finish nil (gastownd--sockname-error
                                          "`%s' did not finish within %s s"
                                          shown gastownd-timeout)))))))))

;;;; Connections

(defun gastownd--plain (value)
  "VALUE, decoded JSON, as the package reads it: null and false are nil.
Arrays become lists.  A `payload' is the user's data, shown as JSON: it
stays as decoded (arrays as vectors, null as :null, false as :false), so
that `gastownd--short' prints it as the CLI does."
  (cond ((memq value '(:null :false)) nil)
        ((vectorp value) (mapcar #'gastownd--plain value))
        ((consp value)
         (mapcar (lambda (pair)
                   (cons (car pair)
                         (if (eq (car pair) 'payload)
                             (cdr pair)
                           (gastownd--plain (cdr pair)))))
                 value))
        (t value)))

(defun gastownd--parse (line)
  "LINE parsed as JSON, or nil if it is not JSON."
  (condition-case nil
      (json-parse-string line :object-type 'alist :array-type 'array
                         :null-object :null :false-object :false)
    (error nil)))

(defun gastownd--nul-as-text (line)
  "LINE (JSON) with each escaped NUL written as the text \\u0000.
Emacs's JSON parser (before 30) refuses a NUL in a string, and with it the
whole frame: a feed or a list that holds a line with one would never show."
  (let ((start 0) (parts nil))
    (while (string-match "\\\\u0000" line start)
      (let* ((at (match-beginning 0)) (before at))
        (while (and (> before 0) (eq (aref line (1- before)) ?\\))
          (setq before (1- before)))
        (push (substring line start at) parts)
        ;; After an even run of backslashes this one starts an escape.
        (push (if (cl-evenp (- at before)) "\\\\u0000" "\\u0000") parts)
        (setq start (match-end 0))))
    (apply #'concat (nreverse (cons (substring line start) parts)))))

(defun gastownd--decode (line)
  "LINE as an alist, or nil if it is not a JSON object.
See `gastownd--plain' for how its values are read; an escaped NUL is read
as the text \\u0000."
  (let ((value (or (gastownd--parse line)
                   (and (string-search "\\u0000" line)
                        (gastownd--parse (gastownd--nul-as-text line))))))
    (and (consp value) (gastownd--plain value))))

(defun gastownd--error-plist (object)
  "The error OBJECT of a reply (an alist) as (:code CODE :message MESSAGE)."
  (list :code (or (alist-get 'code object) "error")
        :message (or (alist-get 'message object) "no message")))

(defconst gastownd--not-running-regexp
  (regexp-opt '("No such file" "refused" "code 2\n" "code 111\n"))
  "What a failed connection says when nothing listens on the socket.")

(defun gastownd--connect-error (path err)
  "A one-line error for a failed connection to PATH.
ERR is the error signaled, or the sentinel's event string."
  (let ((text (if (stringp err) err (error-message-string err))))
    (list :code "unavailable"
          :message
          (if (string-match-p gastownd--not-running-regexp text)
              (format "the daemon is not running (nothing listens on %s)" path)
            (format "cannot connect to %s: %s" path (string-trim text))))))

(defun gastownd--open (path on-frame on-close)
  "Connect to the socket PATH; return the process, or nil.
ON-FRAME gets each frame received, decoded.  ON-CLOSE gets an error plist
once, when the connection fails or ends, unless it was closed with
`gastownd--close'.  Neither runs before this function returns."
  (condition-case err
      (let ((process (make-network-process
                      :name "gastownd" :family 'local :service path
                      :nowait t :noquery t :coding 'utf-8-unix
                      :filter #'gastownd--filter
                      :sentinel #'gastownd--sentinel)))
        (process-put process 'gastownd-path path)
        (process-put process 'gastownd-on-frame on-frame)
        (process-put process 'gastownd-on-close on-close)
        (process-put process 'gastownd-partial "")
        (if (memq (process-status process) '(connect open))
            process
          ;; With :nowait, a connection refused at once leaves the process
          ;; in a `file-error' (or `file-missing') status, and no sentinel runs.
          (gastownd--open-failed (gastownd--status-error path process)
                                 on-close)))
    (error
     (gastownd--open-failed (gastownd--connect-error path err) on-close))))

(defun gastownd--status-error (path process)
  "The error plist of PROCESS, which could not connect to PATH at once."
  (let ((status (process-status process)))
    (gastownd--close process)
    (if (or (eq status 'file-missing) (file-writable-p path))
        (list :code "unavailable"
              :message
              (format "the daemon is not running (nothing listens on %s)" path))
      (list :code "unavailable"
            :message (format "cannot connect to %s (%s)" path status)))))

(defun gastownd--open-failed (failure on-close)
  "Report FAILURE, a connection that failed, to ON-CLOSE later; return nil."
  (run-at-time 0 nil (lambda () (gastownd--safely (funcall on-close failure))))
  nil)

(defun gastownd--close (process)
  "Close PROCESS from our side: nothing more is delivered from it."
  (when process
    (process-put process 'gastownd-dropped t)
    (when (process-live-p process) (delete-process process))))

(defun gastownd--fail (process err)
  "PROCESS ended with ERR: tell its owner, once."
  (unless (process-get process 'gastownd-dropped)
    (gastownd--close process)
    (let ((on-close (process-get process 'gastownd-on-close)))
      (gastownd--safely (funcall on-close err)))))

(defun gastownd--send (process message)
  "Send MESSAGE (a plist) on PROCESS, now or once it is connected."
  (unless (process-get process 'gastownd-dropped)
    (let ((data (concat (json-serialize message) "\n")))
      (if (eq (process-status process) 'open)
          (process-send-string process data)
        (process-put process 'gastownd-outbox
                     (append (process-get process 'gastownd-outbox)
                             (list data)))))))

(defun gastownd--sentinel (process event)
  "React to EVENT on PROCESS: connected, failed or closed."
  (let ((path (process-get process 'gastownd-path)))
    (cond ((process-get process 'gastownd-dropped))
          ((eq (process-status process) 'open)
           (let ((outbox (process-get process 'gastownd-outbox)))
             (process-put process 'gastownd-outbox nil)
             (condition-case err
                 (dolist (data outbox) (process-send-string process data))
               (error (gastownd--fail process
                                      (gastownd--connect-error path err))))))
          ((string-prefix-p "failed" event)
           (gastownd--fail process (gastownd--connect-error path event)))
          (t
           (gastownd--fail
            process (list :code "unavailable"
                          :message "the daemon closed the connection"))))))

(defun gastownd--filter (process chunk)
  "Split CHUNK, received on PROCESS, into frames and hand them over."
  (let* ((data (concat (process-get process 'gastownd-partial) chunk))
         (lines (split-string data "\n"))
         (on-frame (process-get process 'gastownd-on-frame)))
    (process-put process 'gastownd-partial (car (last lines)))
    (dolist (line (butlast lines))
      (unless (or (process-get process 'gastownd-dropped)
                  (string-empty-p line))
        (let ((frame (gastownd--decode line)))
          (when frame
            (gastownd--safely (funcall on-frame frame))))))))

(defun gastownd--hello ()
  "The hello request that opens every connection."
  (list :op "hello" :id 0 :protocol gastownd-protocol :client "gastownd.el"))

(defun gastownd--request (root op fields callback &optional timeout)
  "Send OP with FIELDS (a plist) to the daemon of ROOT.
Call CALLBACK once with the result (an alist) and nil, or with nil and an
error plist, within TIMEOUT seconds (default `gastownd-timeout') whatever
the daemon does."
  (let ((finished nil) (process nil) (timer nil)
        (limit (or timeout gastownd-timeout)))
    (cl-flet ((finish (result err)
                (unless finished
                  (setq finished t)
                  (when timer (cancel-timer timer))
                  (gastownd--close process)
                  (gastownd--safely (funcall callback result err)))))
      (setq timer
            (run-at-time
             limit nil
             (lambda ()
               (finish nil (list :code "timeout"
                                 :message
                                 (format
                                  "the daemon did not answer `%s' within %.1f s"
                                  op limit))))))
      (gastownd--socket
       root
       (lambda (path err)
         (cond
          (finished)
          (err (finish nil err))
          ((setq process (gastownd--open
                          path
                          (lambda (frame)
                            (cond ((alist-get 'push frame))
                                  ((and (eql (alist-get 'id frame) 1)
                                        (alist-get 'ok frame))
                                   (finish (alist-get 'result frame) nil))
                                  ((not (alist-get 'ok frame))
                                   ;; Ours, the hello's, or a connection-level
                                   ;; error (busy, forbidden).
                                   (finish nil (gastownd--error-plist
                                                (alist-get 'error frame))))))
                          (lambda (close-error) (finish nil close-error))))
           (gastownd--send process (gastownd--hello))
           (gastownd--send process (append (list :op op :id 1) fields)))))))))

;;;; Text

(defun gastownd--local-time (ts format-string)
  "The timestamp TS in local time, with FORMAT-STRING.
TS itself when it does not parse."
  (or (and (stringp ts)
           (ignore-errors
             (format-time-string format-string
                                 (parse-iso8601-time-string ts))))
      (format "%s" (or ts "?"))))

(defun gastownd--json (value)
  "VALUE, a decoded payload value, as compact JSON (as `gastownctl' prints it)."
  (condition-case nil
      (json-serialize value :null-object :null :false-object :false)
    (error (format "%S" value))))

(defun gastownd--text (text)
  "TEXT from the log (any writer's) made fit for one buffer line.
A newline is shown as ⏎; every other control character (NUL, ESC, CR, DEL,
the C1 ones) and the bidi controls, which would reorder what is shown, as
its escape \\uXXXX, as `gastownctl' prints them."
  (replace-regexp-in-string
   "[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
   (lambda (char) (format "\\u%04x" (string-to-char char)))
   (replace-regexp-in-string "\r?\n" "⏎" (if (stringp text) text (format "%s" (or text ""))))
   t t))

(defun gastownd--short (value &optional limit)
  "VALUE on one line of at most LIMIT characters (default 60).
Strings as they are, other values as JSON."
  (let* ((limit (or limit 60))
         (text (gastownd--text (if (stringp value) value (gastownd--json value)))))
    (if (> (length text) limit)
        (concat (substring text 0 (1- limit)) "…")
      text)))

(defun gastownd--summary (payload &optional actor)
  "PAYLOAD (an alist) as key=value pairs, keys sorted.
Without what the line already says (ACTOR is the line's actor): a `role'
equal to the actor, an `actor_pid' of ACTOR-PID (shown as pid=PID), and
session ids cut to 8 characters."
  (mapconcat
   #'identity
   (delq nil
         (mapcar
          (lambda (pair)
            (let ((key (symbol-name (car pair)))
                  (value (cdr pair)))
              (cond
               ((and (equal key "role") actor (equal value actor))
                (setq value 'skip))
               ((and (equal key "actor_pid") actor (stringp value)
                     (string-match (concat "\\`" (regexp-quote actor)
                                           "-\\([0-9]+\\)\\'")
                                   value))
                (setq key "pid" value (match-string 1 value)))
               ((and (equal key "session_id") (stringp value)
                     (string-match-p "\\`[0-9a-f]+-[0-9a-f]+-" value))
                (setq value (gastownd--short-id value))))
              (unless (eq value 'skip)
                (format "%s=%s" (gastownd--text key) (gastownd--short value)))))
          (sort (copy-sequence (and (consp payload) payload))
                (lambda (a b)
                  (string< (symbol-name (car a)) (symbol-name (car b)))))))
   " "))

(defun gastownd--pad (text width)
  "TEXT padded with spaces to WIDTH columns."
  (let ((text (gastownd--text (format "%s" (or text "")))))
    (concat text (make-string (max 0 (- width (string-width text))) ?\s))))

(defun gastownd--who (actor node)
  "ACTOR, with @NODE when the record came from another machine."
  (if (and node (not (string-empty-p node)))
      (format "%s@%s" (or actor "") node)
    (or actor "")))

(defun gastownd--remote-node (record)
  "The node of RECORD (a session, digest or attribution), if another one.
Nil when RECORD comes from the node that answered."
  (and (eq (alist-get 'remote record) t) (alist-get 'node record)))

(defun gastownd--columns (&rest columns)
  "COLUMNS joined by two spaces, without trailing blanks."
  (string-trim-right (string-join columns "  ")))

(defun gastownd--face (text face)
  "TEXT with FACE (as `font-lock-face', which font-lock leaves alone)."
  (propertize (gastownd--text (format "%s" (or text ""))) 'font-lock-face face))

(defun gastownd--feed-time (ts)
  "TS for a feed line: `gastownd-time-format' today, else with the date."
  (let ((time (and (stringp ts) (ignore-errors (parse-iso8601-time-string ts)))))
    (cond ((null time) (format "%s" (or ts "?")))
          ((equal (format-time-string "%F" time) (format-time-string "%F"))
           (format-time-string gastownd-time-format time))
          (t (format-time-string gastownd-day-time-format time)))))

(defun gastownd--time-width ()
  "The width of the feed's time column."
  (max (length (format-time-string gastownd-time-format 0))
       (length (format-time-string gastownd-day-time-format 0))))

(defun gastownd--event-line (event &optional node local-node)
  "EVENT (an alist) as `time  type  actor  summary'.
NODE, or the event's own node, names the machine it came from, shown as
actor@node unless it is LOCAL-NODE (the answering daemon's own)."
  (let* ((node (or node (alist-get 'node event)))
         (node (unless (equal node local-node) node))
         (actor (alist-get 'actor event))
         ;; Cut like a payload value, as gastownctl does: a 1 MB actor is no 1 MB line.
         (who (concat (gastownd--face (gastownd--short (or actor "")) 'gastownd-actor)
                      (if (and node (not (string-empty-p node)))
                          (gastownd--face (concat "@" (gastownd--short node)) 'gastownd-node)
                        ""))))
    (propertize
     (gastownd--columns
      (gastownd--pad (gastownd--face (gastownd--feed-time (alist-get 'ts event))
                                     'gastownd-time)
                     (gastownd--time-width))
      (gastownd--pad (gastownd--face (gastownd--short (or (alist-get 'type event) "?"))
                                     'gastownd-type)
                     14)
      (gastownd--pad who 24)
      (gastownd--summary (alist-get 'payload event) actor))
     'gastownd-event event)))

(defun gastownd--marker (text)
  "A line of the feed's own (a reconnection, a resync) saying TEXT."
  (gastownd--face (format "-- %s  %s" (format-time-string gastownd-time-format)
                          text)
                  'gastownd-status))

(defun gastownd--short-id (id)
  "The first 8 characters of the session ID."
  (truncate-string-to-width (or id "?") 8))

(defun gastownd--widest (records key least)
  "The widest `string-width' of KEY over RECORDS, at least LEAST."
  (apply #'max least (mapcar (lambda (record)
                               (string-width (or (funcall key record) "")))
                             records)))

(defun gastownd--attribution-lines (issue records)
  "The lines of the who buffer: ISSUE, then one line per record of RECORDS.
The columns are aligned; each line holds its record (`gastownd-record')."
  (if (null records)
      (list (format "no session is recorded as touching %s" issue))
    (let ((action-width (gastownd--widest
                         records (lambda (r) (alist-get 'action r)) 7))
          (actor-width (gastownd--widest
                        records
                        (lambda (r) (gastownd--who (alist-get 'actor r)
                                                   (gastownd--remote-node r)))
                        1)))
      (cons (format "%s: %d change%s" issue (length records)
                    (if (= (length records) 1) "" "s"))
            (mapcar
             (lambda (record)
               (let ((digest (alist-get 'digest_id record)))
                 (propertize
                  (gastownd--columns
                   (gastownd--pad (gastownd--face (or (alist-get 'action record) "?")
                                                  'gastownd-type)
                                  action-width)
                   (gastownd--face (gastownd--local-time (alist-get 'at record)
                                                         gastownd-date-format)
                                   'gastownd-time)
                   (gastownd--face (gastownd--short-id
                                    (alist-get 'session_id record))
                                   'gastownd-id)
                   (gastownd--pad (gastownd--face
                                   (gastownd--who (alist-get 'actor record)
                                                  (gastownd--remote-node record))
                                   'gastownd-actor)
                                  actor-width)
                   (if digest (concat "digest " digest) "(session open)"))
                  'gastownd-record record)))
             records)))))

(defun gastownd--issue-at-point ()
  "The Beads id at point (gt-a1b2, spotter-dov.3, hq-cv-4k3kg), or nil."
  (save-excursion
    (let ((case-fold-search nil)
          (chars "A-Za-z0-9.-"))
      (skip-chars-backward chars)
      (let* ((start (point))
             (end (progn (skip-chars-forward chars) (point)))
             (word (replace-regexp-in-string
                    "\\`[.-]+\\|[.-]+\\'" ""
                    (buffer-substring-no-properties start end))))
        (when (string-match-p "\\`[a-z][a-z0-9]*-[a-z0-9][a-z0-9.-]*\\'" word)
          word)))))

(provide 'gastownd-core)
;;; gastownd-core.el ends here
